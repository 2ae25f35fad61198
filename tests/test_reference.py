"""The float64 oracle itself: differentiable twice (gradcheck, gradgradcheck), its variable-length
semantics equal running each sequence alone, and its GRU equals torch's own GRU cell."""
import pytest
import torch

from fastrnn import reference

I, H, P = 3, 3, 2


def leaves(*shapes):
    return [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in shapes]


def elman_args(B, bias):
    x, h0, w_ih, w_hh, b_ih, b_hh = leaves((3, B, I), (B, H), (H, I), (H, H), (H,), (H,))
    return (x, h0, w_ih, w_hh) + ((b_ih, b_hh) if bias else ())


def lstm_args(B, bias, proj):
    R = P if proj else H
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = leaves(
        (3, B, I), (B, R), (B, H), (4 * H, I), (4 * H, R), (4 * H,), (4 * H,), (P, H))
    return (x, h0, c0, w_ih, w_hh) + ((b_ih, b_hh) if bias else (None, None)) + ((w_hr,) if proj else ())


def gru_args(B, bias):
    x, h0, w_ih, w_hh, b_ih, b_hh = leaves((3, B, I), (B, H), (3 * H, I), (3 * H, H), (3 * H,), (3 * H,))
    return (x, h0, w_ih, w_hh) + ((b_ih, b_hh) if bias else (None, None))


CASES = [dict(reverse=False, lengths=None), dict(reverse=True, lengths=None),
         dict(reverse=False, lengths=[3, 1]), dict(reverse=True, lengths=[2, 3])]
CASE_IDS = ["fwd", "rev", "fwd-lengths", "rev-lengths"]


def with_lengths(case):
    lengths = case["lengths"]
    return dict(case, lengths=None if lengths is None else torch.tensor(lengths))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("nonlinearity,bias", [("tanh", True), ("relu", False)], ids=["tanh", "relu-nobias"])
def test_elman_layer_gradcheck_and_gradgradcheck(nonlinearity, bias, case):
    args = elman_args(2, bias)
    fn = lambda *a: reference.elman_layer(*a, nonlinearity=nonlinearity, **with_lengths(case))
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("bias,proj", [(True, False), (False, True)], ids=["bias", "nobias-proj"])
def test_lstm_layer_gradcheck_and_gradgradcheck(bias, proj, case):
    args = [a for a in lstm_args(2, bias, proj)]
    fn = lambda *a: reference.lstm_layer(*a, **with_lengths(case))
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gru_layer_gradcheck_and_gradgradcheck(bias, case):
    args = [a for a in gru_args(2, bias) if a is not None]
    fn = lambda *a: reference.gru_layer(*a, **with_lengths(case))
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("B,I_,H_", [(1, 1, 1), (3, 5, 7), (16, 64, 96)], ids=["B1-I1-H1", "B3-I5-H7", "B16-I64-H96"])
def test_gru_cell_equals_torchs(B, I_, H_):
    """torch's own gru_cell in float64: the same equations (b_hn inside the reset product), at a
    realistic size too, to rounding; without biases as well."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1
    x, h, w_ih, w_hh, b_ih, b_hh = r(B, I_), r(B, H_), r(3 * H_, I_), r(3 * H_, H_), r(3 * H_), r(3 * H_)
    for biases in ((b_ih, b_hh), (None, None)):
        want = torch._VF.gru_cell(x, h, w_ih, w_hh, *biases)
        torch.testing.assert_close(reference.gru_cell(x, h, w_ih, w_hh, *biases), want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lengths_equal_running_each_sequence_alone(cell, reverse):
    """Past a sequence's end its output is zero and its state frozen; the reverse direction
    starts at the sequence's own last step."""
    layer = getattr(reference, f"{cell}_layer")
    x, *states_and_weights = lstm_args(3, True, True) if cell == "lstm" else gru_args(3, True)
    n_states = 2 if cell == "lstm" else 1
    states, weights = states_and_weights[:n_states], states_and_weights[n_states:]
    lengths = torch.tensor([3, 1, 2])
    out, *finals = layer(x, *states, *weights, reverse=reverse, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone_out, *alone = layer(x[:n, b:b + 1], *(s[b:b + 1] for s in states), *weights, reverse=reverse)
        torch.testing.assert_close(out[:n, b:b + 1], alone_out, rtol=1e-12, atol=1e-14)
        assert torch.all(out[n:, b] == 0)
        for final, want in zip(finals, alone, strict=True):
            torch.testing.assert_close(final[b:b + 1], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_module_on_reference_is_twice_differentiable_with_packed_input(name):
    """The whole module path (pad, stack, directions, re-pack, un-permute) keeps double backward."""
    from torch.nn.utils.rnn import pack_sequence

    import fastrnn

    module = getattr(fastrnn, name)(2, 3, num_layers=2, bidirectional=True, dtype=torch.float64,
                                    backend="reference")
    seqs = leaves((2, 2), (3, 2))

    def fn(*xs):
        out, hidden = module(pack_sequence(xs, enforce_sorted=False))
        return (out.data,) + (hidden if isinstance(hidden, tuple) else (hidden,))

    assert torch.autograd.gradcheck(fn, seqs, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, seqs, fast_mode=True)
