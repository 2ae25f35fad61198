"""torch.library.opcheck over fastrnn's custom ops: schema, fake implementations, autograd
registration and AOT dispatch, in one and two directions, with and without lengths."""
import pytest
import torch

from fastrnn import library

T, B, H, P = 3, 2, 4, 3
LENGTHS = torch.tensor([3, 1], dtype=torch.int32)


def _rand(*shape, grad=True):
    return torch.randn(*shape).mul_(0.5).requires_grad_(grad)


def _cases(D, proj):
    R = P if proj else H
    xg = [_rand(T, B, 4 * H) for _ in range(D)]
    w_hh = [_rand(4 * H, R) for _ in range(D)]
    w_hr = [_rand(R, H) for _ in range(D)] if proj else [None, None]
    second = (lambda xs: xs[1] if D == 2 else None)
    return (xg[0], second(xg), _rand(D, B, R), _rand(D, B, H), w_hh[0], second(w_hh),
            w_hr[0], second(w_hr))


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_elman_ops(D, lengths):
    torch.manual_seed(0)
    xg = [_rand(T, B, H) for _ in range(D)]
    w_hh = [_rand(H, H) for _ in range(D)]
    args = (xg[0], xg[1] if D == 2 else None, _rand(D, B, H), w_hh[0], w_hh[1] if D == 2 else None,
            lengths, D == 1, False, None)
    torch.library.opcheck(library.elman_fwd_op, args)
    out, h_n = library.elman_fwd_op(*args)
    bwd_args = (torch.randn_like(out), torch.randn_like(h_n), out.detach(), w_hh[0].detach(),
                None if D == 1 else w_hh[1].detach(), lengths, D == 1, True, None)
    torch.library.opcheck(library.elman_bwd_op, bwd_args)


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("proj", [False, True], ids=["plain", "proj"])
def test_lstm_ops(D, proj):
    torch.manual_seed(0)
    args = _cases(D, proj) + (LENGTHS, False, True, None)
    torch.library.opcheck(library.lstm_fwd_op, args)
    out, h_n, c_n, gates, cs, m = library.lstm_fwd_op(*args)
    xg, xg_rev, h0, c0, w_hh, w_hh_rev, w_hr, w_hr_rev = (None if a is None else a.detach() for a in args[:8])
    bwd_args = (torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n), w_hh, w_hh_rev,
                w_hr, w_hr_rev, c0, LENGTHS, gates.detach(), cs.detach(), False, None)
    torch.library.opcheck(library.lstm_bwd_op, bwd_args)


@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_gru_ops(D, lengths):
    torch.manual_seed(0)
    second = (lambda xs: xs[1] if D == 2 else None)
    xg, w_hh = [_rand(T, B, 3 * H) for _ in range(D)], [_rand(3 * H, H) for _ in range(D)]
    b_hn = [_rand(H) for _ in range(D)]
    args = (xg[0], second(xg), _rand(D, B, H), w_hh[0], second(w_hh), b_hn[0], second(b_hn), lengths, D == 1,
            True, None)
    torch.library.opcheck(library.gru_fwd_op, args)
    out, h_n, values = library.gru_fwd_op(*args)
    bwd_args = (torch.randn_like(out), torch.randn_like(h_n), w_hh[0].detach(),
                None if D == 1 else w_hh[1].detach(), lengths, values.detach(), D == 1, None)
    torch.library.opcheck(library.gru_bwd_op, bwd_args)
