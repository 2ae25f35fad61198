"""The float64 oracle itself: differentiable twice (gradcheck, gradgradcheck), and its
variable-length semantics equal running each sequence alone."""
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


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_lengths_equal_running_each_sequence_alone(reverse):
    """Past a sequence's end its output is zero and its state frozen; the reverse direction
    starts at the sequence's own last step."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = lstm_args(3, True, True)
    lengths = torch.tensor([3, 1, 2])
    out, h, c = reference.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse=reverse, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        o1, h1, c1 = reference.lstm_layer(x[:n, b:b + 1], h0[b:b + 1], c0[b:b + 1], w_ih, w_hh, b_ih, b_hh, w_hr,
                                          reverse=reverse)
        torch.testing.assert_close(out[:n, b:b + 1], o1, rtol=1e-12, atol=1e-14)
        assert torch.all(out[n:, b] == 0)
        torch.testing.assert_close(h[b:b + 1], h1, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(c[b:b + 1], c1, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["RNN", "LSTM"])
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
