"""What the module-level tests share: their sizes, the dtype each backend is tested in, a pair
of modules with the same weights, the skip of a cell whose triton kernels are not there yet, and a
deliberately wrong GRU step the oracle must catch."""
import torch
import torch.nn.functional as F

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


def gru_cell_bhn_outside_reset(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """reference.gru_cell with b_hn added outside the reset product: n = tanh(W_in x + b_in +
    r * (W_hn h) + b_hn), what a kernel that folds every bias into the input GEMM computes."""
    x_r, x_z, x_n = F.linear(x, weight_ih, bias_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, weight_hh).chunk(3, dim=-1)
    b_r, b_z, b_n = (torch.zeros_like(weight_hh[:, 0]) if bias_hh is None else bias_hh).chunk(3)
    r, z = torch.sigmoid(x_r + h_r + b_r), torch.sigmoid(x_z + h_z + b_z)
    n = torch.tanh(x_n + r * h_n + b_n)
    return (1 - z) * n + z * h
