"""DistributedDataParallel over fastrnn modules trains like one process on the whole batch.

Two CPU processes (gloo, 127.0.0.1) each take half of every batch; DDP averages their gradients,
which is the gradient of the mean loss over the whole batch. After a few SGD steps each rank's
parameters must equal those of one process training on the full batch. The workers also record
warnings: fastrnn has no cuDNN weight buffer, so no flatten_parameters / "contiguous chunk"
warning may appear. Every (cell, backend) case runs in the same two processes to pay the start-up
once.
"""
import socket
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import fastrnn

# (cell, backend)
CASES = [(cell, backend) for cell in ("LSTM", "GRU") for backend in ("reference", "triton")]
STEPS, T, B, I, H = 2, 3, 4, 3, 5


def _model(case):
    cell, backend = case
    torch.manual_seed(0)
    return torch.nn.ModuleDict({
        "rnn": getattr(fastrnn, cell)(I, H, bidirectional=True, backend=backend),
        "head": torch.nn.Linear(2 * H, 1),
    })


def _batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(T, B, I, generator=g), torch.randn(T, B, 1, generator=g)) for _ in range(STEPS)]


def _loss(model, x, y):
    out, _ = model["rnn"](x)
    return torch.nn.functional.mse_loss(model["head"](out), y)


def _train(model, batches, rank=0, world=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    share = B // world
    for x, y in batches:
        opt.zero_grad()
        _loss(model, x[:, rank * share:(rank + 1) * share], y[:, rank * share:(rank + 1) * share]).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


class _Wrapped(torch.nn.Module):
    """DDP wraps a module whose forward it calls; route the ModuleDict through one."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return _loss(self.model, x, y)


def _worker(rank, world, port, outdir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = {}
            for case in CASES:
                model = _model(case)
                ddp = DistributedDataParallel(_Wrapped(model))
                opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
                share = B // world
                for x, y in _batches():
                    opt.zero_grad()
                    ddp(x[:, rank * share:(rank + 1) * share], y[:, rank * share:(rank + 1) * share]).backward()
                    opt.step()
                out[case] = [p.detach().clone() for p in model.parameters()]
        torch.save((out, [str(w.message) for w in caught]), f"{outdir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_train_like_one(tmp_path):
    world = 2
    mp.start_processes(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, start_method="spawn")
    for rank in range(world):
        params, messages = torch.load(tmp_path / f"rank{rank}.pt")
        bad = [m for m in messages if "flatten_parameters" in m or "contiguous chunk" in m]
        assert not bad, f"rank {rank} warned: {bad}"
        assert set(params) == set(CASES)
        for case in CASES:
            single = _train(_model(case), _batches())
            assert len(params[case]) == len(single)
            for got, want in zip(params[case], single):
                # the all-reduce sums in another order than one process's GEMM: fp32 rounding only
                torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
