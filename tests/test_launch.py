"""kernels/recurrence.py `run`: how each strategy launches, with a fake kernel and a fake GPU (no
GPU here, so the split launch is checked on the host side: grid, barrier buffer, cooperative flag,
co-residency and its fallback)."""
from types import SimpleNamespace

import pytest
import torch

from fastrnn.kernels import recurrence
from fastrnn.kernels.config import launch_config

H100 = SimpleNamespace(max_threads_per_multi_processor=2048, regs_per_multiprocessor=65536,
                       shared_memory_per_multiprocessor=228 * 1024, multi_processor_count=132)


class FakeKernel:
    """Records launches; `warmup` returns a compiled kernel with the given resources."""

    def __init__(self, regs=128, shared=100 * 1024):
        self.launches = []
        self.compiled = SimpleNamespace(n_regs=regs, metadata=SimpleNamespace(shared=shared, num_warps=4),
                                        _init_handles=lambda: None)

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((grid, args, kwargs))

    def warmup(self, *args, grid, **kwargs):
        return self.compiled


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: H100)


def launch(kernel, strategy, B=16, H=768, forced=False, reverse=False, **override):
    cfg = launch_config("lstm", "fwd", B, H, H, torch.bfloat16, "meta", override=dict(STRATEGY=strategy, **override))
    cfg["FALLBACK"] = not forced
    recurrence.run(kernel, cfg, "lstm", 5, 5, B, H, H, 1, ("args",), "cpu", reverse)
    return cfg


# a launch's arguments: ("args", sync_ptr, T, B, H, R, reverse, grid_sync, first, count)


def test_rows_is_one_launch_of_all_steps():
    kernel = FakeKernel()
    launch(kernel, "rows")
    (grid, args, kwargs), = kernel.launches
    assert grid == (1, 1, 1) and args[-4:] == (0, 0, 0, 5) and kwargs["STRATEGY"] == "rows"
    assert args[1] is None  # no barrier buffer


def test_reverse_is_a_runtime_argument():
    """Both directions of a one-direction launch are one binary."""
    kernel = FakeKernel()
    launch(kernel, "rows", reverse=True)
    (_, args, kwargs), = kernel.launches
    assert args[-4] == 1 and "REVERSE" not in kwargs


def test_stepwise_launches_each_sub_step():
    kernel = FakeKernel()
    cfg = launch(kernel, "stepwise")
    assert [a[-2:] for _, a, _ in kernel.launches] == [(u, 1) for u in range(5)]
    assert {g for g, _, _ in kernel.launches} == {(768 // cfg["BLOCK_H"], 1, 1)}
    # the split kernel (the same binary) with its barrier off, and no cooperative launch
    assert all(k["STRATEGY"] == "split" and a[-3] == 0 and "launch_cooperative_grid" not in k
               for _, a, k in kernel.launches)


def test_split_is_cooperative_with_a_zeroed_barrier_buffer(gpu):
    kernel = FakeKernel()
    cfg = launch(kernel, "split")
    (grid, args, kwargs), = kernel.launches
    assert grid == (768 // cfg["BLOCK_H"], 1, 1) and kwargs["launch_cooperative_grid"] and args[-3] == 1
    sync = args[1]
    assert sync.dtype == torch.int32 and sync.shape == (2,) and not sync.any()  # one counter, the error flag


def test_split_that_cannot_be_co_resident_falls_back_or_raises(gpu):
    big = FakeKernel(regs=255, shared=200 * 1024)  # one program per SM: 48 programs still fit
    launch(big, "split")
    assert big.launches[0][2]["launch_cooperative_grid"]
    crowded = FakeKernel(regs=255, shared=200 * 1024)
    launch(crowded, "split", B=256, BLOCK_H=16)  # 4 batch tiles x 48: 192 programs > 132 SMs
    assert [(a[-3], "launch_cooperative_grid" in k) for _, a, k in crowded.launches] == [(0, False)] * 5  # stepwise
    with pytest.raises(ValueError, match="co-resident.*'stepwise'"):
        launch(FakeKernel(regs=255, shared=200 * 1024), "split", B=256, BLOCK_H=16, forced=True)
