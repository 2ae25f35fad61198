"""fastrnn.RNN / LSTM / GRU against torch.nn: outputs, h_n, c_n and every gradient.

torch.nn runs in float64 with the same weights; fastrnn runs in `run_dtype(backend)` (float64 on
the reference, float32 on the fused backends) and must agree within `tolerances(dtype, T)`,
which in float64 means rtol ~1e-7: far tighter than a swapped gate or a missing bias.
"""
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import fastrnn
from fastrnn.testing import assert_close

from module_cases import H, I, make_pair, run_dtype

# (class name, constructor kwargs); every constructor option appears at least once.
CONFIGS = [
    ("RNN", {}),
    ("RNN", dict(nonlinearity="relu")),
    ("RNN", dict(num_layers=2, bidirectional=True)),
    ("RNN", dict(bias=False, batch_first=True, nonlinearity="relu")),
    ("LSTM", {}),
    ("LSTM", dict(num_layers=2)),
    ("LSTM", dict(bidirectional=True, batch_first=True)),
    ("LSTM", dict(bias=False)),
    ("LSTM", dict(proj_size=3)),
    ("LSTM", dict(proj_size=2, num_layers=2, bidirectional=True, bias=False, batch_first=True)),
    ("GRU", {}),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(bias=False, batch_first=True)),
]
NAMES = ["RNN", "LSTM", "GRU"]
# (T, B). The biggest grid in this file: thin it for slow backends (the Triton interpreter).
SHAPES = [(1, 1), (5, 3)]
FORMS = ["hx", "nohx", "unbatched", "packed-hx", "packed-unsorted", "packed-unsorted-hx"]


def config_id(config):
    name, kw = config
    short = {"nonlinearity": "", "num_layers": "L", "bidirectional": "bi", "bias": "nobias",
             "batch_first": "bf", "proj_size": "proj"}
    parts = [name]
    for k, v in kw.items():
        parts.append(v if k == "nonlinearity" else short[k] + ("" if isinstance(v, bool) else str(v)))
    return "-".join(parts)


def make_inputs(name, kw, T, B, form):
    """float64 master tensors and a `call(module, leaves)` that builds the module's input from
    leaves (same order as the masters) and runs it. Names label the leaves in failures."""
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    R = kw.get("proj_size") or H
    is_lstm = name == "LSTM"
    packed = form.startswith("packed")
    unbatched = form == "unbatched"
    if packed:
        lengths = [T] * B if T == 1 else [max(1, T - 3), T, T - 1][:B]
        if form == "packed-hx":  # enforce_sorted=True needs decreasing lengths
            lengths = sorted(lengths, reverse=True)
        masters = [torch.randn(n, I, dtype=torch.float64) for n in lengths]
        names = [f"x{b}" for b in range(B)]
    else:
        shape = (T, I) if unbatched else ((B, T, I) if kw.get("batch_first") else (T, B, I))
        masters, names = [torch.randn(shape, dtype=torch.float64)], ["x"]
    with_hx = form.endswith("hx") and form != "nohx"
    if with_hx:
        hshape = (L * D, R) if unbatched else (L * D, B, R)
        masters.append(torch.randn(hshape, dtype=torch.float64))
        names.append("h0")
        if is_lstm:
            masters.append(torch.randn(hshape[:-1] + (H,), dtype=torch.float64))
            names.append("c0")
    n_x = B if packed else 1

    def call(module, leaves):
        xs, hs = leaves[:n_x], leaves[n_x:]
        x = pack_sequence(xs, enforce_sorted=form == "packed-hx") if packed else xs[0]
        hx = None if not hs else (tuple(hs) if is_lstm else hs[0])
        return module(x, hx)

    return masters, names, call


def outputs_and_grads(module, masters, call, dtype):
    """Run `call` on fresh leaves in `dtype`; backprop seeded random cotangents on every output.
    Returns (outputs [output, h_n, (c_n)], grads [leaves..., parameters...])."""
    leaves = [m.detach().to(dtype).requires_grad_() for m in masters]
    out, hidden = call(module, leaves)
    if isinstance(out, PackedSequence):
        out = out.data
    outs = [out] + (list(hidden) if isinstance(hidden, tuple) else [hidden])
    gen = torch.Generator().manual_seed(1234)
    cots = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, leaves + list(module.parameters()), cots)
    return outs, grads


def assert_matches_torch(fast, ref, masters, names, call, dtype, T):
    got_outs, got_grads = outputs_and_grads(fast, masters, call, dtype)
    want_outs, want_grads = outputs_and_grads(ref, masters, call, torch.float64)
    out_names = ["output", "h_n", "c_n"]
    for k, (a, e) in enumerate(zip(got_outs, want_outs, strict=True)):
        assert_close(a, e, name=out_names[k], dtype=dtype, T=T)
    grad_names = [f"grad {n}" for n in names] + [f"grad {n}" for n, _ in fast.named_parameters()]
    for n, a, e in zip(grad_names, got_grads, want_grads, strict=True):
        assert_close(a, e, name=n, dtype=dtype, T=T)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("T,B", SHAPES, ids=[f"T{t}-B{b}" for t, b in SHAPES])
@pytest.mark.parametrize("config", CONFIGS, ids=[config_id(c) for c in CONFIGS])
def test_forward_and_grads_match_torch(config, T, B, form, backend):
    name, kw = config
    dtype = run_dtype(backend)
    fast, ref = make_pair(name, kw, dtype, backend)
    masters, names, call = make_inputs(name, kw, T, B, form)
    assert_matches_torch(fast, ref, masters, names, call, dtype, T)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_shaped_like_torch(name, backend):
    dtype = run_dtype(backend)
    kw = dict(num_layers=2, bidirectional=True, batch_first=True)
    if name == "LSTM":
        kw["proj_size"] = 3
    fast, ref = make_pair(name, kw, dtype, backend)
    x = torch.randn(2, 4, I, dtype=torch.float64)
    got, want = fast(x.to(dtype)), ref(x)
    assert got[0].shape == want[0].shape == (2, 4, 2 * (kw.get("proj_size") or H))
    flat = (lambda h: list(h) if isinstance(h, tuple) else [h])
    assert [h.shape for h in flat(got[1])] == [h.shape for h in flat(want[1])]
    assert got[0].dtype == dtype


@pytest.mark.parametrize("name", NAMES)
def test_dropout_eval_equals_no_dropout_and_train_equals_torch_at_p1(name, backend):
    """Eval ignores dropout. In training with p=1 every layer but the last gets a zero input,
    which is deterministic, so torch.nn in training mode is an exact oracle; h_n/c_n of the
    first layer come from before the dropout."""
    dtype = run_dtype(backend)
    kw = dict(num_layers=2, bidirectional=True)
    fast, ref = make_pair(name, kw, dtype, backend, dropout=1.0)
    masters, names, call = make_inputs(name, kw, 4, 2, "hx")
    fast.eval(), ref.eval()
    assert_matches_torch(fast, ref, masters, names, call, dtype, 4)
    fast.train(), ref.train()
    assert_matches_torch(fast, ref, masters, names, call, dtype, 4)


@pytest.mark.parametrize("name", NAMES)
def test_dropout_half_leaves_first_layer_state_alone(name, backend):
    dtype = run_dtype(backend)
    fast, ref = make_pair(name, dict(num_layers=2), dtype, backend, dropout=0.5)
    x = torch.randn(4, 3, I, dtype=torch.float64)
    fast.train(), ref.eval()
    out, hidden = fast(x.to(dtype))
    want_out, want_hidden = ref(x)
    for got, want in zip(*[(h if isinstance(h, tuple) else (h,)) for h in (hidden, want_hidden)]):
        assert_close(got[0], want[0], name="layer-0 state", dtype=dtype, T=4)
    # Layer 1 saw a dropped-out input, so its results must differ from the eval ones.
    assert (out.double() - want_out).abs().max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_dropout_masks_are_torchs_on_cpu(name, backend):
    """Between layers rnn_stack calls the dropout torch's CPU RNNs call, in the same order, so from
    the same seed the masks are torch.nn's: outputs and gradients agree (in the same dtype)."""
    dtype = run_dtype(backend)
    fast, _ = make_pair(name, dict(num_layers=3, bidirectional=True), dtype, backend, dropout=0.5)
    ref = getattr(torch.nn, name)(I, H, num_layers=3, bidirectional=True, dropout=0.5, dtype=dtype)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(4, 3, I, dtype=dtype)
    results = []
    for module in (fast, ref):
        torch.manual_seed(7)
        xi = x.clone().requires_grad_()
        out = module(xi)[0]
        results.append([out, *torch.autograd.grad(out.square().sum(), [xi, *module.parameters()])])
    for got, want in zip(*results, strict=True):
        assert_close(got, want, name="dropout run", dtype=dtype, T=4)
    torch.manual_seed(8)  # and a different seed gives different masks
    assert not torch.allclose(fast(x)[0], results[1][0])


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval_identical_without_dropout(name, backend):
    fast = getattr(fastrnn, name)(I, H, num_layers=2, dtype=run_dtype(backend), backend=backend)
    x = torch.randn(3, 2, I, dtype=run_dtype(backend))
    a = fast.train()(x)[0]
    b = fast.eval()(x)[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_returns_empty_tensors(name, backend):
    dtype = run_dtype(backend)
    fast, ref = make_pair(name, dict(num_layers=2), dtype, backend)
    x = torch.randn(4, 0, I, dtype=torch.float64)
    got, want = fast(x.to(dtype)), ref(x)
    assert got[0].shape == want[0].shape
    flat = (lambda h: list(h) if isinstance(h, tuple) else [h])
    assert [h.shape for h in flat(got[1])] == [h.shape for h in flat(want[1])]


@pytest.mark.parametrize("name", NAMES)
def test_noncontiguous_input(name, backend):
    dtype = run_dtype(backend)
    fast, ref = make_pair(name, {}, dtype, backend)
    x = torch.randn(3, 5, 2 * I, dtype=torch.float64)[:, ::2, ::2]  # [3, 3, I], strided
    assert_close(fast(x.to(dtype))[0], ref(x)[0], dtype=dtype, T=3)


def test_functional_call_sees_substituted_weights(backend):
    dtype = run_dtype(backend)
    fast, ref = make_pair("LSTM", dict(num_layers=2), dtype, backend)
    new = {k: torch.randn_like(v) for k, v in fast.named_parameters()}
    x = torch.randn(3, 2, I, dtype=torch.float64)
    got = torch.func.functional_call(fast, new, (x.to(dtype),))[0]
    want = torch.func.functional_call(ref, {k: v.double() for k, v in new.items()}, (x,))[0]
    assert_close(got, want, dtype=dtype, T=3)
    # and the module's own weights are back in use afterwards
    assert_close(fast(x.to(dtype))[0], ref(x)[0], dtype=dtype, T=3)


# Realistic sizes beside the tiny ones: the interpreter runs triton's at the smallest of them.
REALISTIC = {"reference": dict(T=64, B=16, I=64, H=128), "aten": dict(T=64, B=16, I=64, H=128),
             "triton": dict(T=32, B=4, I=64, H=64)}


@pytest.mark.parametrize("name", NAMES)
def test_realistic_size_matches_torch(name, backend):
    """Two bidirectional layers against torch.nn in float64: outputs, states and every gradient,
    within the same tolerances (a swapped gate differs by O(0.1) here too)."""
    size = REALISTIC[backend]
    kw = dict(num_layers=2, bidirectional=True)
    dtype = run_dtype(backend)
    fast = getattr(fastrnn, name)(size["I"], size["H"], **kw, dtype=dtype, backend=backend)
    ref = getattr(torch.nn, name)(size["I"], size["H"], **kw, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    masters = [torch.randn(size["T"], size["B"], size["I"], dtype=torch.float64)]
    call = (lambda module, leaves: module(leaves[0]))
    assert_matches_torch(fast, ref, masters, ["x"], call, dtype, size["T"])
