"""The LSTM on the kernel skeleton (kernels/recurrence.py) through fastrnn.fused, on every strategy
the interpreter runs, against the float64 reference."""
import pytest
import torch
import torch.nn.functional as F

from fastrnn import fused, reference
from fastrnn.kernels.recurrence import forward
from fastrnn.testing import assert_close

from layer_cases import (
    SMALL_TILES,
    case_id,
    check_bidirectional,
    check_layer,
    every_strategy,  # noqa: F401 (an autouse fixture)
    layer_args,
    nan_filled_buffers,  # noqa: F401 (an autouse fixture)
)

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
MIXED = [5, 1, 3]  # unsorted, one sequence of length 1, one of full length


CASES = [
    # (T, B, I, H, P, dtype, reverse, lengths, config)
    (5, 3, 4, 7, 0, F32, False, None, None),
    (5, 3, 4, 7, 0, F16, False, None, None),
    (5, 3, 4, 7, 0, BF16, False, None, None),
    (5, 3, 4, 7, 0, F32, True, None, None),
    (5, 3, 4, 7, 0, F32, False, MIXED, None),
    (5, 3, 4, 7, 0, F32, True, MIXED, None),
    (5, 3, 4, 8, 5, F32, False, MIXED, None),
    (5, 3, 4, 8, 5, BF16, True, MIXED, None),
    (1, 1, 3, 7, 0, F32, False, None, None),
    (1, 1, 3, 7, 0, F32, True, [1], None),
    # multi-tile: H=40 is three 16-wide tiles, B=20 two batch tiles, weights streamed
    (4, 20, 6, 40, 0, F32, False, None, SMALL_TILES),
    (4, 20, 6, 40, 0, F32, True, [4, 1, 3, 2] * 5, SMALL_TILES),
    (4, 20, 6, 40, 24, F32, True, [4, 1, 3, 2] * 5, SMALL_TILES),
    (4, 20, 6, 40, 24, BF16, False, [4, 1, 3, 2] * 5, SMALL_TILES),
    (4, 17, 6, 40, 0, F16, False, None, SMALL_TILES),
    # the default heuristic on a hidden size that does not fit one tile (streams W_hh)
    (3, 2, 5, 100, 0, F32, False, [3, 2], None),
    # a longer sequence
    (48, 2, 3, 9, 0, F32, True, [48, 30], None),
]


@pytest.mark.parametrize(
    "T,B,I,H,P,dtype,reverse,lengths,config", CASES,
    ids=[case_id("lstm", c[0], c[1], c[3], c[5], P=c[4], rev=c[6], len=c[7] is not None, tiles=c[8] is not None)
         for c in CASES])
def test_lstm_layer_matches_reference(T, B, I, H, P, dtype, reverse, lengths, config):
    args = layer_args("lstm", T, B, I, H, P)
    check_layer(fused.lstm_layer, "lstm", args, dtype, lengths=lengths, reverse=reverse, config=config)


BIDIRECTIONAL = [
    # (T, B, I, H, P, dtype, lengths, config): one launch, grid axis 1 = direction
    (5, 3, 4, 7, 0, F32, None, None),
    (5, 3, 4, 7, 0, F32, MIXED, None),
    (5, 3, 4, 8, 5, BF16, MIXED, None),
    (4, 20, 6, 40, 24, F32, [4, 1, 3, 2] * 5, SMALL_TILES),
    (4, 17, 6, 40, 0, F16, None, SMALL_TILES),
]


@pytest.mark.parametrize(
    "T,B,I,H,P,dtype,lengths,config", BIDIRECTIONAL,
    ids=[case_id("lstm-bi", c[0], c[1], c[3], c[5], P=c[4], len=c[6] is not None, tiles=c[7] is not None)
         for c in BIDIRECTIONAL])
def test_lstm_bidirectional_matches_reference(T, B, I, H, P, dtype, lengths, config):
    check_bidirectional(fused.lstm_directions, "lstm", T, B, I, H, P, dtype, lengths=lengths,
                        config=config)


def test_bidirectional_no_bias():
    check_bidirectional(fused.lstm_directions, "lstm", 4, 3, 4, 7, bias=False, lengths=[4, 2, 3])


def test_no_bias():
    args = layer_args("lstm", 4, 3, 4, 7, bias=False)
    check_layer(fused.lstm_layer, "lstm", args, F32, reverse=True, lengths=[4, 2, 3])


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "streamed"])
def test_weight_residency_paths_agree(resident):
    config = dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=16, PIECES=4, W_RESIDENT=resident)  # 4 pieces: 4H rows (bwd)
    args = layer_args("lstm", 4, 3, 4, 16)
    check_layer(fused.lstm_layer, "lstm", args, F32, config=config)


def test_inference_path_without_saved_activations():
    args = layer_args("lstm", 5, 3, 4, 8, P=5)
    with torch.no_grad():
        check_layer(fused.lstm_layer, "lstm", args, F32, grads=False, lengths=MIXED, reverse=True)


SENTINEL = [
    # (T, B, I, H, P, D, lengths, config)
    (3, 20, 4, 40, 0, 1, None, SMALL_TILES),  # three hidden tiles, two batch tiles, streamed weights
    (4, 20, 6, 40, 24, 2, [4, 1, 3, 2] * 5, SMALL_TILES),  # both directions, projection, padded steps
    (5, 3, 4, 7, 0, 2, MIXED, None),  # the default launch settings
]


@pytest.mark.parametrize(
    "T,B,I,H,P,D,lengths,config", SENTINEL,
    ids=[case_id("lstm", c[0], c[1], c[3], F32, P=c[4], bi=c[5] == 2, len=c[6] is not None,
                 tiles=c[7] is not None) for c in SENTINEL])
def test_outputs_are_fully_written(T, B, I, H, P, D, lengths, config):
    """The launcher's `out` starts as NaN: every element must be stored, with the reference's value
    (zeros at padded steps); h_n, c_n and the saved activations come from NaN-filled buffers too."""
    R = P or H
    per_dir = [[None if a is None else a.detach() for a in layer_args("lstm", T, B, I, H, P, seed=d)]
               for d in range(D)]
    x = per_dir[0][0]
    lengths = None if lengths is None else torch.tensor(lengths)
    xg = [F.linear(x, a[3], a[5] + a[6]).float() for a in per_dir]
    h0 = torch.stack([a[1] for a in per_dir]).float()
    c0 = torch.stack([a[2] for a in per_dir]).float()
    w_hh = [a[4].float() for a in per_dir]
    w_hr = [a[7].float() for a in per_dir] if P else None
    out = torch.full((T, B, D * R), float("nan"))
    h_n, c_n, saved = forward("lstm", xg, w_hh, h0, None if lengths is None else lengths.int(), out, c0=c0,
                              w_hr=w_hr, save=True, config=config)
    ref = [reference.lstm_layer(x, *a[1:], reverse=d == 1, lengths=lengths) for d, a in enumerate(per_dir)]
    assert_close(out, torch.cat([r[0] for r in ref], dim=-1), name="out", dtype=F32, T=T)
    assert_close(h_n, torch.stack([r[1] for r in ref]), name="h_n", dtype=F32, T=T)
    assert_close(c_n, torch.stack([r[2] for r in ref]), name="c_n", dtype=F32, T=T)
    for name, t in zip(["gates", "c", "m"], saved):
        assert t is None or torch.isfinite(t).all(), f"saved {name} has elements the kernel never stored"


def test_saturated_gates_stay_finite_and_exact():
    """Huge pre-activations and a cell state that keeps growing: no NaN/Inf, and h equals the
    reference. With i = f = o = 1 and g = 1 every step adds 1 to c, so c_T = c0 + T."""
    T, B, H = 120, 2, 4
    x = torch.full((T, B, 1), 1.0)
    w_ih = torch.full((4 * H, 1), 1e4)
    w_hh = torch.zeros(4 * H, H)
    h0, c0 = torch.zeros(B, H), torch.full((B, H), 1e6)
    out, h_n, c_n = fused.lstm_layer(x, h0, c0, w_ih, w_hh)
    assert torch.isfinite(out).all() and torch.isfinite(c_n).all()
    torch.testing.assert_close(c_n, torch.full((B, H), 1e6 + T))
    torch.testing.assert_close(h_n, torch.ones(B, H))
    out, h_n, c_n = fused.lstm_layer(-x, h0, -c0, w_ih, w_hh)  # all gates closed: c decays to 0
    assert torch.isfinite(out).all()
    torch.testing.assert_close(c_n, torch.zeros(B, H))


def test_double_backward_points_to_reference():
    x, h0, c0, *w = [a.detach().float().requires_grad_() if a is not None else None
                     for a in layer_args("lstm", 2, 2, 3, 5)]
    out, h_n, c_n = fused.lstm_layer(x, h0, c0, *w)
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)  # allowed: torch.func.grad asks for it
    with pytest.raises(RuntimeError, match="backend='reference'"):
        torch.autograd.grad(gx.pow(2).sum(), x)  # the second derivative is what raises


def test_rejects_weights_of_another_dtype():
    """h is kept in the weights' dtype: bf16 weights under fp32 input would round it silently."""
    x, h0, c0, w_ih, w_hh, *rest = [None if a is None else a.detach().float() for a in layer_args("lstm", 2, 2, 3, 5)]
    with pytest.raises(fused.BackendError, match="weights in the input's dtype"):
        fused.lstm_layer(x, h0, c0, w_ih, w_hh.bfloat16(), *rest)


def test_rejects_float64_with_a_pointer_to_reference():
    x, h0, c0, *w = layer_args("lstm", 2, 2, 3, 5)
    with pytest.raises(fused.BackendError, match="backend='reference'"):
        fused.lstm_layer(x, h0, c0, *w)
