"""Tolerances and the one comparison helper every test and the oracle use."""
import math

import torch

# dtype -> (atol, rtol) for one recurrent step; `tolerances` grows them with sequence length.
_BASE = {
    torch.float64: (1e-10, 1e-7),
    torch.float32: (2e-5, 1e-4),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def tolerances(dtype, T=1):
    """(atol, rtol) for comparing a `dtype` result against the float64 reference after T steps.

    Rounding errors of a contracting recurrence add up roughly like a random walk, so the bound
    grows with sqrt(T); it stays far below the O(0.1) errors a swapped gate or missing bias makes.
    """
    atol, rtol = _BASE[dtype]
    grow = math.sqrt(max(int(T), 1))
    return atol * grow, rtol * grow


def assert_close(actual, expected, *, name="output", atol=None, rtol=None, dtype=None, T=1):
    """Assert `actual` equals `expected` (compared in float64) within tolerances.

    The tolerances are `atol`/`rtol` when given, else `tolerances(dtype or actual.dtype, T)`.
    The message names the tensor and reports NaN/Inf, the max abs and rel error and the index of
    the first mismatch.
    """
    if actual is None or expected is None:
        if actual is None and expected is None:
            return
        raise AssertionError(f"{name}: one side is None (actual={type(actual).__name__}, "
                             f"expected={type(expected).__name__})")
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if atol is None or rtol is None:
        a, r = tolerances(dtype or actual.dtype, T)
        atol = a if atol is None else atol
        rtol = r if rtol is None else rtol
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    if not torch.isfinite(a).all() and torch.isfinite(e).all():
        bad = (~torch.isfinite(a)).nonzero()[0].tolist()
        raise AssertionError(f"{name}: non-finite value (NaN/Inf) at index {bad}, expected all finite")
    err = (a - e).abs()
    bad = ~(err <= atol + rtol * e.abs())
    if bad.any():
        first = bad.nonzero()[0].tolist()
        max_abs = err.max().item()
        max_rel = (err / e.abs().clamp_min(1e-30)).max().item()
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{bad.numel()} elements differ; max abs err {max_abs:.3e}, "
            f"max rel err {max_rel:.3e} (atol {atol:.1e}, rtol {rtol:.1e}); first at index {first}: "
            f"{a[tuple(first)].item():.8g} vs expected {e[tuple(first)].item():.8g}")
