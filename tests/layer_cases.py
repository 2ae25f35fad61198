"""Shared by the kernel tests: random layer arguments and a comparison against the reference."""
import contextlib

import pytest
import torch

from fastrnn import reference
from fastrnn.testing import assert_close, tolerances

SMALL_TILES = dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=16, W_RESIDENT=False)
REFERENCE = {"elman": reference.elman_layer, "lstm": reference.lstm_layer, "gru": reference.gru_layer}


@pytest.fixture(autouse=True)
def nan_filled_buffers():
    """Import it into a test module: every buffer the launchers allocate (outputs, state, saved
    activations, gradients) starts as NaN, so a store a kernel forgot fails the comparison."""
    with uninitialized_memory_is_nan():
        yield


@pytest.fixture(autouse=True, params=["rows", "stepwise"])
def every_strategy(request, monkeypatch):
    """Import it into a test module to run each of its tests on every strategy the interpreter
    can run: rows, and stepwise, the split strategy's twin (the same kernel body, a launch per
    sub-step). A config that names STRATEGY still wins."""
    monkeypatch.setenv("FASTRNN_TRITON_STRATEGY", request.param)
    return request.param


@contextlib.contextmanager
def uninitialized_memory_is_nan():
    """Inside, torch.empty and the like return NaN (torch's fill_uninitialized_memory, which acts
    under deterministic algorithms): a sentinel in every buffer a launcher allocates, so an element
    a kernel forgot to store shows as NaN instead of passing on whatever the memory held."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]


def case_id(cell, T, B, H, dtype, **flags):
    name = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    extra = "-".join(k for k, v in flags.items() if v)
    return f"{cell}-T{T}-B{B}-H{H}-{name}" + (f"-{extra}" if extra else "")


def layer_args(cell, T, B, I, H, P=0, bias=True, lengths=None, seed=0):
    """float64 leaf tensors for one layer: (x, h0, [c0], w_ih, w_hh, b_ih, b_hh, [w_hr])."""
    g = torch.Generator().manual_seed(seed)
    R, G = P or H, {"lstm": 4, "gru": 3, "elman": 1}[cell]
    k = H ** -0.5

    def rand(*shape, scale=k):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale).requires_grad_()

    x, h0 = rand(T, B, I, scale=1.0), rand(B, R, scale=0.5)
    w_ih, w_hh = rand(G * H, I), rand(G * H, R)
    b_ih, b_hh = (rand(G * H), rand(G * H)) if bias else (None, None)
    if cell == "lstm":
        return [x, h0, rand(B, H, scale=0.5), w_ih, w_hh, b_ih, b_hh, rand(P, H) if P else None]
    return [x, h0, w_ih, w_hh, b_ih, b_hh]


def check_layer(fused_fn, cell, args64, dtype, *, lengths=None, grads=True, **kw):
    """Run `fused_fn` in `dtype` and the reference in float64 on the same values; compare every
    output and, under one set of random cotangents, the gradient of every input."""
    ref_fn = REFERENCE[cell]
    lengths = None if lengths is None else torch.tensor(lengths)
    T = args64[0].shape[0]
    args = [None if a is None else a.detach().to(dtype).requires_grad_(grads) for a in args64]
    ref_kw = {k: v for k, v in kw.items() if k != "config"}
    expected = ref_fn(*args64, lengths=lengths, **ref_kw)
    actual = fused_fn(*args, lengths=lengths, **kw)
    leaves64 = [a for a in args64 if a is not None]
    leaves = [a for a in args if a is not None]
    arg_names = (["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"] if cell == "lstm"
                 else ["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"])
    present = [n for n, a in zip(arg_names, args64) if a is not None]
    _compare(actual, expected, leaves, leaves64, present if grads else None, dtype, T)


def _compare(actual, expected, leaves, leaves64, leaf_names, dtype, T):
    """Every output of the fused run (in `dtype`) against the float64 reference's; then, unless
    leaf_names is None, the gradient of every leaf under one set of random cotangents."""
    for name, a, e in zip(["out", "h_n", "c_n"], actual, expected):
        assert a.dtype == dtype, f"{name} dtype {a.dtype} != {dtype}"
        assert_close(a, e, name=name, dtype=dtype, T=T)
    if leaf_names is None:
        return
    g = torch.Generator().manual_seed(1)
    cots = [torch.randn(e.shape, generator=g, dtype=torch.float64) for e in expected]
    expected_g = torch.autograd.grad(expected, leaves64, cots)
    actual_g = torch.autograd.grad(actual, leaves, [c.to(dtype) for c in cots])
    for name, a, e in zip(leaf_names, actual_g, expected_g, strict=True):
        assert a.dtype == dtype, f"grad {name} dtype {a.dtype} != {dtype}"
        # a gradient sums T*B terms: scale the absolute tolerance by its magnitude
        atol, rtol = _grad_tol(dtype, T, e)
        assert_close(a, e, name=f"grad {name}", atol=atol, rtol=rtol)


def _grad_tol(dtype, T, e):
    atol, rtol = tolerances(dtype, T)
    return atol * max(1.0, e.abs().max().item()), rtol


def check_bidirectional(fused_fn, cell, T, B, I, H, P=0, dtype=torch.float32, *, lengths=None,
                        bias=True, config=None, **kw):
    """Both directions in one fused call against the reference run per direction (float64) and
    concatenated as torch does: out, h_n (, c_n) and the gradient of x, of both directions'
    initial states and of every weight, under one set of random cotangents."""
    per_dir = [layer_args(cell, T, B, I, H, P, bias=bias, seed=seed) for seed in (0, 1)]
    x64 = per_dir[0][0]
    n_state = 2 if cell == "lstm" else 1
    states64 = [torch.stack([a[1 + i] for a in per_dir]).detach().requires_grad_() for i in range(n_state)]
    weights64 = [a[1 + n_state:] for a in per_dir]
    lengths = None if lengths is None else torch.tensor(lengths)
    ref_fn = REFERENCE[cell]
    ref = [ref_fn(x64, *[s[d] for s in states64], *weights64[d], reverse=d == 1, lengths=lengths, **kw)
           for d in (0, 1)]
    expected = [torch.cat([ref[0][0], ref[1][0]], dim=-1)] + [
        torch.stack([ref[0][i], ref[1][i]]) for i in range(1, len(ref[0]))]

    cast = (lambda a: None if a is None else a.detach().to(dtype).requires_grad_())
    x, states = cast(x64), [cast(s) for s in states64]
    weights = [tuple(cast(w) for w in ws) for ws in weights64]
    actual = fused_fn(x, *states, weights, lengths=lengths, config=config, **kw)
    leaves64 = [x64, *states64, *[w for ws in weights64 for w in ws if w is not None]]
    leaves = [x, *states, *[w for ws in weights for w in ws if w is not None]]
    _compare(actual, expected, leaves, leaves64, [f"leaf {i}" for i in range(len(leaves))], dtype, T)
