"""fastrnn.aten (the CPU fast path) against the float64 reference and torch.nn."""
import pytest
import torch

from fastrnn import aten, cellspec, reference
from fastrnn.functional import rnn_stack
from fastrnn.testing import assert_close

DTYPES = {"f32": torch.float32, "f64": torch.float64}
# None: every sequence T long; "full": lengths given but all T; "sorted": descending (a module
# unpacking a PackedSequence); "varied": unsorted, one empty
LENGTHS = {"nolen": None, "full": [5, 5, 5, 5], "sorted": [5, 4, 2, 1], "varied": [3, 5, 0, 1]}
T, B, I, H, P = 5, 4, 3, 7, 4


def _lengths(key):
    return None if LENGTHS[key] is None else torch.tensor(LENGTHS[key])


def _weights(rows, I, R, dtype, bias, proj=None):
    """(w_ih, w_hh, b_ih, b_hh[, w_hr]) leaves with requires_grad."""
    def leaf(*shape):
        return (torch.randn(*shape, dtype=dtype) * 0.5).requires_grad_()
    H = rows // 4 if proj is not None else None
    w = [leaf(rows, I), leaf(rows, R), leaf(rows) if bias else None, leaf(rows) if bias else None]
    if proj is not None:
        w.append(leaf(proj, H) if proj else None)
    return w


def _grads_close(outs_a, outs_e, inputs_a, inputs_e, dtype):
    """Outputs, then gradients of every input under the same random cotangents."""
    for k, (a, e) in enumerate(zip(outs_a, outs_e)):
        assert_close(a, e, name=f"output[{k}]", dtype=dtype, T=T)
    cot = [torch.randn_like(o) for o in outs_e]
    live_a = [t for t in inputs_a if t is not None]
    live_e = [t for t in inputs_e if t is not None]
    ga = torch.autograd.grad(outs_a, live_a, cot, allow_unused=True)
    ge = torch.autograd.grad(outs_e, live_e, cot, allow_unused=True)
    for k, (a, e) in enumerate(zip(ga, ge)):
        assert_close(a, e, name=f"grad[{k}]", dtype=dtype, T=T)


def _reference_directions(layer, x, states, weights, lengths, **kw):
    """The reference run per direction (the second walks backwards), joined as one layer gives them."""
    runs = [layer(x, *(s[d] for s in states), *w, reverse=d == 1, lengths=lengths, **kw)
            for d, w in enumerate(weights)]
    outs, *finals = zip(*runs)
    return [torch.cat(outs, -1), *(torch.stack(f) for f in finals)]


def _double(ts):
    return [None if t is None else t.double() for t in ts]


# aten.layer_directions is the op that runs torch's calls when compiled or vmapped; its backward is
# torch's own, recomputed by length group where lengths vary, so gradients are checked too.
@pytest.mark.parametrize("lens", list(LENGTHS))
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("bias", ["bias", "nobias", "hh-only"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dt", list(DTYPES))
def test_elman_layer_op(dt, nonlinearity, bias, D, lens):
    dtype = DTYPES[dt]
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(D, B, H, dtype=dtype, requires_grad=True)
    ws = [_weights(H, I, H, dtype, bias != "nobias") for _ in range(D)]
    for w in ws:
        if bias == "hh-only":
            w[2] = None
    lengths = _lengths(lens)
    mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
    out, h_n, _ = aten.layer_directions(x, h0, None, ws, mode=mode, lengths=lengths)
    want = _reference_directions(reference.elman_layer, x.double(), [h0.double()], [_double(w) for w in ws],
                                 lengths, nonlinearity=nonlinearity)
    leaves = [x, h0, *(t for w in ws for t in w)]
    _grads_close([out.double(), h_n.double()], want, leaves, leaves, dtype)


@pytest.mark.parametrize("lens", list(LENGTHS))
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("bias", ["bias", "nobias", "hh-only"])
@pytest.mark.parametrize("dt", list(DTYPES))
def test_gru_layer_op(dt, bias, D, lens):
    dtype = DTYPES[dt]
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(D, B, H, dtype=dtype, requires_grad=True)
    ws = [_weights(3 * H, I, H, dtype, bias != "nobias") for _ in range(D)]
    for w in ws:
        if bias == "hh-only":
            w[2] = None
    lengths = _lengths(lens)
    out, h_n, c_n = aten.layer_directions(x, h0, None, ws, mode="GRU", lengths=lengths)
    assert c_n is None
    want = _reference_directions(reference.gru_layer, x.double(), [h0.double()], [_double(w) for w in ws], lengths)
    leaves = [x, h0, *(t for w in ws for t in w)]
    _grads_close([out.double(), h_n.double()], want, leaves, leaves, dtype)


@pytest.mark.parametrize("lens", list(LENGTHS))
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("proj", [0, P], ids=["noproj", f"P{P}"])
@pytest.mark.parametrize("bias", ["bias", "nobias"])
@pytest.mark.parametrize("dt", list(DTYPES))
def test_lstm_layer_op(dt, bias, proj, D, lens):
    dtype = DTYPES[dt]
    R = proj or H
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(D, B, R, dtype=dtype, requires_grad=True)
    c0 = torch.randn(D, B, H, dtype=dtype, requires_grad=True)
    ws = [_weights(4 * H, I, R, dtype, bias == "bias", proj) for _ in range(D)]
    lengths = _lengths(lens)
    got = aten.layer_directions(x, h0, c0, ws, mode="LSTM", lengths=lengths)
    want = _reference_directions(reference.lstm_layer, x.double(), [h0.double(), c0.double()],
                                 [_double(w) for w in ws], lengths)
    leaves = [x, h0, c0, *(t for w in ws for t in w)]
    _grads_close([o.double() for o in got], want, leaves, leaves, dtype)


def _stack_weights(mode, L, D, dtype, proj):
    gates = cellspec.of(mode).gates
    R = proj or H
    return [_weights(gates * H, I if layer == 0 else D * R, R, dtype, True, proj if mode == "LSTM" else None)
            for layer in range(L) for _ in range(D)]


@pytest.mark.parametrize("lens", list(LENGTHS))
@pytest.mark.parametrize("mode,proj", [("RNN_TANH", 0), ("RNN_RELU", 0), ("LSTM", 0), ("LSTM", P), ("GRU", 0)],
                         ids=["tanh", "relu", "lstm", f"lstm-P{P}", "gru"])
@pytest.mark.parametrize("dt", list(DTYPES))
def test_run_stack_matches_reference(dt, mode, proj, lens):
    """Two bidirectional layers in one _VF call against rnn_stack over the reference layers."""
    dtype, L, D = DTYPES[dt], 2, 2
    R = proj or H
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(L * D, B, R, dtype=dtype, requires_grad=True)
    c0 = torch.randn(L * D, B, H, dtype=dtype, requires_grad=True)
    weights = _stack_weights(mode, L, D, dtype, proj)
    hx = (h0, c0) if mode == "LSTM" else h0
    kw = dict(mode=mode, num_layers=L, bidirectional=True, lengths=_lengths(lens))
    out, hn = aten.run_stack(x, hx, weights, **kw)
    ref_w = [tuple(t.double() if t is not None else None for t in w) for w in weights]
    ref_hx = (h0.double(), c0.double()) if mode == "LSTM" else h0.double()
    ref_out, ref_hn = rnn_stack(x.double(), ref_hx, ref_w, backend="reference", **kw)
    got = [out, *hn] if mode == "LSTM" else [out, hn]
    want = [ref_out, *ref_hn] if mode == "LSTM" else [ref_out, ref_hn]
    flat = [t for w in weights for t in w]
    inputs = [x, h0, c0, *flat] if mode == "LSTM" else [x, h0, *flat]
    _grads_close([o.double() for o in got], want, inputs, inputs, dtype)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_run_stack_equals_torch_gru(packed):
    """Bit-for-bit the same call torch.nn.GRU makes (float32, dropout off)."""
    m = torch.nn.GRU(I, H, num_layers=2, bidirectional=True)
    x, h0 = torch.randn(T, B, I), torch.randn(4, B, H)
    lengths = torch.tensor([3, 5, 2, 1]) if packed else None
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    weights = [tuple(getattr(m, f"{n}_l{layer}{sfx}") for n in kinds) for layer in range(2) for sfx in ("", "_reverse")]
    out, hn = aten.run_stack(x, h0, weights, mode="GRU", num_layers=2, bidirectional=True, lengths=lengths)
    if packed:
        want, whn = m(torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False), h0)
        want = torch.nn.utils.rnn.pad_packed_sequence(want, total_length=T)[0]
    else:
        want, whn = m(x, h0)
    torch.testing.assert_close(out, want, atol=0, rtol=0)
    torch.testing.assert_close(hn, whn, atol=0, rtol=0)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_run_stack_equals_torch_lstm(packed):
    """Bit-for-bit the same call torch.nn makes (float32, dropout off)."""
    m = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P)
    x = torch.randn(T, B, I)
    h0, c0 = torch.randn(4, B, P), torch.randn(4, B, H)
    lengths = torch.tensor([3, 5, 2, 1]) if packed else None
    kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    weights = [tuple(getattr(m, f"{n}_l{layer}{sfx}") for n in kinds)
               for layer in range(2) for sfx in ("", "_reverse")]
    out, (hn, cn) = aten.run_stack(x, (h0, c0), weights, mode="LSTM", num_layers=2, bidirectional=True,
                                   lengths=lengths)
    if packed:
        seq = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        want, (whn, wcn) = m(seq, (h0, c0))
        want = torch.nn.utils.rnn.pad_packed_sequence(want, total_length=T)[0]
    else:
        want, (whn, wcn) = m(x, (h0, c0))
    torch.testing.assert_close(out, want, atol=0, rtol=0)
    torch.testing.assert_close(hn, whn, atol=0, rtol=0)
    torch.testing.assert_close(cn, wcn, atol=0, rtol=0)


def test_errors_match_torch():
    x, h0 = torch.randn(2, 1, 3), torch.randn(1, 1, 4)
    wl = [torch.randn(16, 3), torch.randn(16, 4), None, None, torch.randn(4, 4)]
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        aten.layer_directions(x, h0, torch.randn(1, 1, 4), [wl], mode="LSTM")


def test_dropout_runs_only_in_training():
    weights = _stack_weights("LSTM", 2, 1, torch.float32, 0)
    x = torch.randn(T, B, I)
    hx = (torch.zeros(2, B, H), torch.zeros(2, B, H))
    kw = dict(mode="LSTM", num_layers=2, bidirectional=False, dropout=0.5)
    eval_a = aten.run_stack(x, hx, weights, training=False, **kw)[0]
    eval_b = aten.run_stack(x, hx, weights, training=False, **kw)[0]
    torch.testing.assert_close(eval_a, eval_b, atol=0, rtol=0)
    train = aten.run_stack(x, hx, weights, training=True, **kw)[0]
    assert not torch.equal(train, eval_a)


@pytest.mark.parametrize("mode,proj", [("RNN_TANH", 0), ("LSTM", 0), ("LSTM", P), ("GRU", 0)],
                         ids=["tanh", "lstm", f"lstm-P{P}", "gru"])
def test_run_stack_sorted_lengths_matches_reference(mode, proj):
    """run_stack with lengths already sorted (no permutation copies) against the float64 reference."""
    dtype, L, D, R = torch.float64, 2, 2, proj or H
    lengths = torch.tensor([5, 4, 2, 1])             # sorted, as in a PackedSequence
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(L * D, B, R, dtype=dtype, requires_grad=True)
    c0 = torch.randn(L * D, B, H, dtype=dtype, requires_grad=True)
    weights = _stack_weights(mode, L, D, dtype, proj)
    hx = (h0, c0) if mode == "LSTM" else h0
    out, hn = aten.run_stack(x, hx, weights, mode=mode, num_layers=L, bidirectional=True, lengths=lengths)
    ref_out, ref_hn = rnn_stack(x, hx, weights, mode=mode, num_layers=L, bidirectional=True, lengths=lengths,
                                backend="reference")
    got = [out, *hn] if mode == "LSTM" else [out, hn]
    want = [ref_out, *ref_hn] if mode == "LSTM" else [ref_out, ref_hn]
    flat = [t for w in weights for t in w if t is not None]
    _grads_close(got, want, [x, h0, c0, *flat] if mode == "LSTM" else [x, h0, *flat],
                 [x, h0, c0, *flat] if mode == "LSTM" else [x, h0, *flat], dtype)
