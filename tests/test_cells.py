"""fastrnn.RNNCell / LSTMCell / GRUCell against torch.nn's cells: results, every gradient,
construction, repr and error messages."""
import copy
import pickle

import pytest
import torch

import fastrnn
from fastrnn.testing import assert_close

from module_cases import H, I, make_pair, run_dtype
from outcomes import outcome

CELLS = [("RNNCell", {}), ("RNNCell", dict(nonlinearity="relu")), ("RNNCell", dict(bias=False)),
         ("LSTMCell", {}), ("LSTMCell", dict(bias=False)), ("GRUCell", {}), ("GRUCell", dict(bias=False))]
CELL_IDS = ["RNNCell", "RNNCell-relu", "RNNCell-nobias", "LSTMCell", "LSTMCell-nobias", "GRUCell", "GRUCell-nobias"]
NAMES = ["RNNCell", "LSTMCell", "GRUCell"]
FORMS = ["B1-hx", "B3-hx", "B3-nohx", "unbatched-hx", "unbatched-nohx"]


def outputs_and_grads(module, masters, is_lstm, dtype):
    """Fresh leaves in `dtype` from float64 masters [x, (h, c)]; seeded cotangents on every output."""
    leaves = [m.detach().to(dtype).requires_grad_() for m in masters]
    hx = None if len(leaves) == 1 else (tuple(leaves[1:]) if is_lstm else leaves[1])
    out = module(leaves[0], hx)
    outs = list(out) if is_lstm else [out]
    gen = torch.Generator().manual_seed(99)
    cots = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outs]
    return outs, torch.autograd.grad(outs, leaves + list(module.parameters()), cots)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_cell_matches_torch(cell, form, backend):
    name, kw = cell
    is_lstm = name == "LSTMCell"
    dtype = run_dtype(backend)
    fast, ref = make_pair(name, kw, dtype, backend)
    lead = () if form.startswith("unbatched") else ((1,) if form.startswith("B1") else (3,))
    masters = [torch.randn(*lead, I, dtype=torch.float64)]
    if form.endswith("-hx"):
        masters += [torch.randn(*lead, H, dtype=torch.float64) for _ in range(2 if is_lstm else 1)]
    got_outs, got_grads = outputs_and_grads(fast, masters, is_lstm, dtype)
    want_outs, want_grads = outputs_and_grads(ref, masters, is_lstm, torch.float64)
    for n, a, e in zip(["h", "c"][:len(want_outs)], got_outs, want_outs, strict=True):
        assert_close(a, e, name=n, dtype=dtype)
    names = ["x", "h0", "c0"][:len(masters)] + [n for n, _ in fast.named_parameters()]
    for n, a, e in zip(names, got_grads, want_grads, strict=True):
        assert_close(a, e, name=f"grad {n}", dtype=dtype)


def test_cell_construction_repr_and_parameters_equal_torch():
    for name, args in (("RNNCell", (5, 8, False, "relu")), ("LSTMCell", (5, 8, False)), ("RNNCell", (5, 8)),
                       ("GRUCell", (5, 8, False)), ("GRUCell", (5, 8))):
        torch.manual_seed(3)
        fast = getattr(fastrnn, name)(*args)
        torch.manual_seed(3)
        ref = getattr(torch.nn, name)(*args)
        assert isinstance(fast, getattr(torch.nn, name))
        assert repr(fast) == repr(ref)
        assert list(fast.state_dict()) == list(ref.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(fast.parameters(), ref.parameters(), strict=True))
    assert repr(fastrnn.LSTMCell(5, 8, backend="reference")) == "LSTMCell(5, 8, backend='reference')"
    assert repr(fastrnn.GRUCell(5, 8, backend="aten")) == "GRUCell(5, 8, backend='aten')"
    with pytest.raises(ValueError, match="backend must be one of"):
        fastrnn.RNNCell(5, 8, backend="nope")


@pytest.mark.parametrize("name", NAMES)
def test_cell_copies(name):
    m = getattr(fastrnn, name)(5, 8, backend="reference")
    x = torch.randn(2, 5)
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert type(c) is type(m) and c.backend == "reference"
        got, want = c(x), m(x)
        assert all(torch.equal(a, b) for a, b in zip(got, want)) if name == "LSTMCell" else torch.equal(got, want)




r = torch.randn
RNN_CELL_CASES = [
    ("3D", r(1, 3, 4), None), ("hx-3D", r(3, 4), r(1, 3, 8)), ("input-size", r(3, 5), None),
    ("hidden-size", r(3, 4), r(3, 9)), ("batch", r(3, 4), r(2, 8)), ("unbatched-2D-hx", r(4), r(3, 8)),
    ("batched-1D-hx", r(3, 4), r(8)), ("input-dtype", r(3, 4, dtype=torch.float64), None),
    ("hx-dtype", r(3, 4), r(3, 8, dtype=torch.float64)),
]
LSTM_CELL_CASES = [
    ("3D", r(1, 3, 4), None), ("hx-4D", r(3, 4), (r(3, 8), r(1, 1, 3, 8))), ("input-size", r(3, 5), None),
    ("h-size", r(3, 4), (r(3, 9), r(3, 8))), ("c-size", r(3, 4), (r(3, 8), r(3, 9))),
    ("h-batch", r(3, 4), (r(2, 8), r(3, 8))), ("c-batch", r(3, 4), (r(3, 8), r(2, 8))),
    ("one-state", r(3, 4), (r(3, 8),)), ("three-states", r(3, 4), (r(3, 8),) * 3),
    ("input-dtype", r(3, 4, dtype=torch.float64), None),
]


@pytest.mark.parametrize("x,hx", [c[1:] for c in RNN_CELL_CASES], ids=[c[0] for c in RNN_CELL_CASES])
@pytest.mark.parametrize("name", ["RNNCell", "GRUCell"])
def test_one_state_cell_errors_equal_torch(name, x, hx, backend):
    # every backend: on "aten" the cell is torch's own forward, the others run fastrnn's checks
    fast, ref = getattr(fastrnn, name)(4, 8, backend=backend), getattr(torch.nn, name)(4, 8)
    want = outcome(lambda: ref(x, hx))
    assert want[0] != "ok"
    assert outcome(lambda: fast(x, hx)) == want


@pytest.mark.parametrize("x,hx", [c[1:] for c in LSTM_CELL_CASES], ids=[c[0] for c in LSTM_CELL_CASES])
def test_lstm_cell_errors_equal_torch(x, hx, backend):
    fast, ref = fastrnn.LSTMCell(4, 8, backend=backend), torch.nn.LSTMCell(4, 8)
    want = outcome(lambda: ref(x, hx))
    assert want[0] != "ok"
    assert outcome(lambda: fast(x, hx)) == want


def test_unknown_nonlinearity_fails_at_forward_like_torch(backend):
    fast = fastrnn.RNNCell(4, 8, nonlinearity="gelu", backend=backend)
    ref = torch.nn.RNNCell(4, 8, nonlinearity="gelu")
    x = torch.randn(2, 4)
    assert outcome(lambda: fast(x)) == outcome(lambda: ref(x)) == (RuntimeError, "Unknown nonlinearity: gelu")


@pytest.mark.parametrize("name", NAMES)
def test_cell_empty_batch(name):
    fast, ref = getattr(fastrnn, name)(4, 8), getattr(torch.nn, name)(4, 8)
    got, want = fast(torch.randn(0, 4)), ref(torch.randn(0, 4))
    got, want = (got, want) if name == "LSTMCell" else ((got,), (want,))
    assert [g.shape for g in got] == [w.shape for w in want]
