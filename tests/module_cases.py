"""What the module-level tests share: their sizes, the dtype each backend is tested in, a pair
of modules with the same weights, and the skip of a cell whose triton kernels are not there yet."""
import pytest
import torch

import fastrnn
from fastrnn import cellspec

I, H = 5, 7  # odd sizes on purpose


def run_dtype(backend):
    """The dtype a backend is tested in: float64 on the reference, float32 on fused kernels."""
    return torch.float64 if backend == "reference" else torch.float32


def make_pair(name, kw, dtype, backend, **extra):
    """(fastrnn module in `dtype`, torch.nn module in float64) with identical weights."""
    fast = getattr(fastrnn, name)(I, H, **kw, **extra, dtype=dtype, backend=backend)
    ref = getattr(torch.nn, name)(I, H, **kw, **extra, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    return fast, ref


def has_kernels(name):
    """Does fastrnn.fused have the op of cell `name` (a torch.nn class name or mode: 'GRU', 'GRUCell')?"""
    from fastrnn import fused
    return hasattr(fused, cellspec.of(name).fused_directions)


def needs_kernels(name, backend):
    """Skip a "triton" test of cell `name` while fastrnn.fused has no op for it; every other test
    runs. The GRU's kernels land separately: once fused.gru_directions exists, its triton tests run
    and this skips nothing."""
    if backend == "triton" and not has_kernels(name):
        pytest.skip(f"fastrnn.fused has no {cellspec.of(name).fused_directions} yet")
