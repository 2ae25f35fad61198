"""What the module-level tests share: their sizes, the dtype each backend is tested in, and a pair
of modules with the same weights."""
import torch

import fastrnn

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
