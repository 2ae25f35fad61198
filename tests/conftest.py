import os

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when fastrnn.kernels is first
# imported. conftest.py is imported before any test module, so setting it here (unless the caller
# chose otherwise) makes every Triton kernel run on CPU tensors through the interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

import copy
from typing import NamedTuple

import pytest
import torch
from torch.utils._pytree import tree_map


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Backends the module-level tests run on. "triton" runs its kernels through the interpreter here.
MODULE_BACKENDS = ["reference", "aten", "triton"]


@pytest.fixture(params=MODULE_BACKENDS)
def backend(request):
    return request.param


class Expected(NamedTuple):
    """What a fastrnn module should give: `result` and the `leaves` to differentiate it by (x, the
    hx tensors, the parameters); `torch_error` is torch.nn's error message when the result is the
    float64 reference's because torch.nn itself cannot run the case on this CPU, else None."""
    result: object
    leaves: list
    torch_error: object


def _hx_tensors(hx):
    return [] if hx is None else [hx] if isinstance(hx, torch.Tensor) else list(hx)


def _torch_or_reference(ref, x, hx=None):
    """torch.nn module `ref` on (x, hx) under the current autocast state; where torch.nn raises
    and fastrnn's capability probe says torch's kernel cannot run this case here (oneDNN's LSTM
    under CPU autocast without AVX-512), the float64 reference of the same weights outside
    autocast instead. Any other disagreement between torch.nn and the probe fails the test."""
    import fastrnn
    from fastrnn import backends

    mode = getattr(ref, "mode", type(ref).__name__)
    autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    runs = backends.aten_runs(mode, x.dtype, autocast)
    try:
        result = ref(x) if hx is None else ref(x, hx)
    except RuntimeError as err:
        if runs:
            raise
        oracle = fastrnn.convert(copy.deepcopy(ref), backend="reference").double()
        xd = x.detach().double().requires_grad_(x.requires_grad)
        hxd = None if hx is None else tree_map(lambda t: t.detach().double().requires_grad_(), hx)
        with torch.autocast("cpu", enabled=False):
            result = oracle(xd) if hxd is None else oracle(xd, hxd)
        return Expected(result, [xd, *_hx_tensors(hxd), *oracle.parameters()], str(err))
    assert runs, f"torch.nn runs {mode} on {x.dtype} under autocast {autocast}, but the probe says no"
    return Expected(result, [x, *_hx_tensors(hx), *ref.parameters()], None)


@pytest.fixture
def torch_or_reference():
    """`torch_or_reference(ref, x, hx=None) -> Expected`: the expected result of a test that
    compares with torch.nn, without skipping where torch.nn cannot run the case on this CPU."""
    return _torch_or_reference
