"""fastrnn's six classes against PyTorch's own module test data (`common_modules.module_db`):
every sample input gives torch.nn's outputs and gradients, every error input torch.nn's error.
Needs `expecttest` (in the `test` extra), which torch's internal test utilities import."""
import functools

import pytest
import torch
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

import fastrnn
from fastrnn.testing import assert_close

from module_cases import run_dtype
from outcomes import outcome

OURS = {torch.nn.RNN: fastrnn.RNN, torch.nn.LSTM: fastrnn.LSTM, torch.nn.GRU: fastrnn.GRU,
        torch.nn.RNNCell: fastrnn.RNNCell, torch.nn.LSTMCell: fastrnn.LSTMCell, torch.nn.GRUCell: fastrnn.GRUCell}
INFOS = [info for info in module_db if info.module_cls in OURS]


def flat_tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in flat_tensors(o)]
    return []


def build_pair(info, ctor, backend):
    torch.manual_seed(0)
    ref = info.module_cls(*ctor.args, **ctor.kwargs)
    torch.manual_seed(0)
    fast = OURS[info.module_cls](*ctor.args, **ctor.kwargs, backend=backend)
    return fast, ref


def grads(module, sample, dtype):
    """Outputs and gradients (inputs, then parameters) of one forward under seeded cotangents."""
    args = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else
            tuple(t.detach().clone().requires_grad_() for t in a) if isinstance(a, tuple) else a
            for a in sample.forward_input.args]
    outs = flat_tensors(module(*args, **sample.forward_input.kwargs))
    gen = torch.Generator().manual_seed(5)
    cots = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outs]
    leaves = flat_tensors(args) + list(module.parameters())
    return outs, torch.autograd.grad(outs, leaves, cots)


@pytest.mark.parametrize("info", INFOS, ids=[i.name for i in INFOS])
def test_module_db_samples_match_torch(info, backend):
    dtype = run_dtype(backend)
    samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True)
    assert samples
    if backend != "reference":
        samples = samples[::4]  # the interpreter is slow; test_modules.py covers every option there
    for k, sample in enumerate(samples):
        fast, ref = build_pair(info, sample.constructor_input, backend)
        fast.to(dtype), ref.to(dtype)
        assert list(fast.state_dict()) == list(ref.state_dict())
        got_outs, got_grads = grads(fast, sample, dtype)
        want_outs, want_grads = grads(ref, sample, dtype)
        for n, (a, e) in enumerate(zip(got_outs, want_outs, strict=True)):
            assert_close(a, e, name=f"sample {k} output {n}", dtype=dtype, T=4)
        for n, (a, e) in enumerate(zip(got_grads, want_grads, strict=True)):
            assert_close(a, e, name=f"sample {k} grad {n}", dtype=dtype, T=4)




@pytest.mark.parametrize("info", [i for i in INFOS if i.module_error_inputs_func],
                         ids=[i.name for i in INFOS if i.module_error_inputs_func])
def test_module_db_error_inputs_raise_like_torch(info, backend):
    errors = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False,
                                           training=True)
    assert errors
    for err in errors:
        ctor, fwd = err.module_error_input.constructor_input, err.module_error_input.forward_input

        def run(cls, ctor=ctor, err=err, fwd=fwd):
            m = cls(*ctor.args, **ctor.kwargs)
            if err.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
                return m
            return m(*fwd.args, **fwd.kwargs)

        want = outcome(lambda: run(info.module_cls))
        got = outcome(lambda: run(functools.partial(OURS[info.module_cls], backend=backend)))
        assert want[0] is err.error_type, want
        assert got == want, (err.error_regex, got, want)
