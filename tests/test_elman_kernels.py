"""The Elman RNN on the kernel skeleton (kernels/recurrence.py) through fastrnn.fused, on every
strategy the interpreter runs, against the float64 reference."""
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
MIXED = [5, 1, 3]


CASES = [
    # (T, B, I, H, nonlinearity, dtype, reverse, lengths, config)
    (5, 3, 4, 7, "tanh", F32, False, None, None),
    (5, 3, 4, 7, "relu", F32, False, None, None),
    (5, 3, 4, 7, "tanh", F16, True, None, None),
    (5, 3, 4, 7, "tanh", BF16, False, MIXED, None),
    (5, 3, 4, 7, "relu", BF16, True, MIXED, None),
    (5, 3, 4, 7, "tanh", F32, True, MIXED, None),
    (5, 3, 4, 7, "relu", F32, True, MIXED, None),
    (1, 1, 3, 7, "tanh", F32, False, None, None),
    (1, 1, 3, 7, "relu", F32, True, [1], None),
    (4, 20, 6, 40, "tanh", F32, False, None, SMALL_TILES),
    (4, 20, 6, 40, "relu", F32, True, [4, 1, 3, 2] * 5, SMALL_TILES),
    (4, 17, 6, 40, "tanh", F16, True, [4, 1, 3, 2] * 4 + [3], SMALL_TILES),
    (4, 20, 6, 40, "tanh", BF16, False, None, SMALL_TILES),
    (3, 2, 5, 130, "tanh", F32, False, [3, 2], None),
    (64, 2, 3, 9, "tanh", F32, True, [64, 40], None),
]


@pytest.mark.parametrize(
    "T,B,I,H,nonlinearity,dtype,reverse,lengths,config", CASES,
    ids=[case_id("elman", c[0], c[1], c[3], c[5], relu=c[4] == "relu", rev=c[6], len=c[7] is not None,
                 tiles=c[8] is not None) for c in CASES])
def test_elman_layer_matches_reference(T, B, I, H, nonlinearity, dtype, reverse, lengths, config):
    args = layer_args("elman", T, B, I, H)
    check_layer(fused.elman_layer, "elman", args, dtype, lengths=lengths, reverse=reverse,
                nonlinearity=nonlinearity, config=config)


BIDIRECTIONAL = [
    # (T, B, I, H, nonlinearity, dtype, lengths, config): one launch, grid axis 1 = direction
    (5, 3, 4, 7, "tanh", F32, None, None),
    (5, 3, 4, 7, "relu", F32, MIXED, None),
    (5, 3, 4, 7, "tanh", BF16, MIXED, None),
    (4, 20, 6, 40, "tanh", F32, [4, 1, 3, 2] * 5, SMALL_TILES),
]


@pytest.mark.parametrize(
    "T,B,I,H,nonlinearity,dtype,lengths,config", BIDIRECTIONAL,
    ids=[case_id("elman-bi", c[0], c[1], c[3], c[5], relu=c[4] == "relu", len=c[6] is not None,
                 tiles=c[7] is not None) for c in BIDIRECTIONAL])
def test_elman_bidirectional_matches_reference(T, B, I, H, nonlinearity, dtype, lengths, config):
    check_bidirectional(fused.elman_directions, "elman", T, B, I, H, dtype=dtype, lengths=lengths,
                        config=config, nonlinearity=nonlinearity)


def test_no_bias():
    args = layer_args("elman", 4, 3, 4, 7, bias=False)
    check_layer(fused.elman_layer, "elman", args, F32, reverse=True, lengths=[4, 2, 3], nonlinearity="tanh")


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "streamed"])
def test_weight_residency_paths_agree(resident):
    config = dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=16, W_RESIDENT=resident)
    args = layer_args("elman", 4, 3, 4, 16)
    check_layer(fused.elman_layer, "elman", args, F32, config=config, nonlinearity="tanh")


SENTINEL = [
    # (T, B, I, H, nonlinearity, D, lengths, config)
    (3, 20, 4, 40, "tanh", 1, None, SMALL_TILES),  # three hidden tiles, two batch tiles, streamed weights
    (4, 20, 6, 40, "relu", 2, [4, 1, 3, 2] * 5, SMALL_TILES),  # both directions, padded steps
    (5, 3, 4, 7, "tanh", 2, MIXED, None),  # the default launch settings
]


@pytest.mark.parametrize(
    "T,B,I,H,nonlinearity,D,lengths,config", SENTINEL,
    ids=[case_id("elman", c[0], c[1], c[3], F32, relu=c[4] == "relu", bi=c[5] == 2, len=c[6] is not None,
                 tiles=c[7] is not None) for c in SENTINEL])
def test_outputs_are_fully_written(T, B, I, H, nonlinearity, D, lengths, config):
    """The launcher's `out` starts as NaN: every element must be stored, with the reference's value
    (zeros at padded steps); h_n comes from a NaN-filled buffer too."""
    per_dir = [[a.detach() for a in layer_args("elman", T, B, I, H, seed=d)] for d in range(D)]
    x = per_dir[0][0]
    lengths = None if lengths is None else torch.tensor(lengths)
    xg = [F.linear(x, a[2], a[4] + a[5]).float() for a in per_dir]
    h0 = torch.stack([a[1] for a in per_dir]).float()
    out = torch.full((T, B, D * H), float("nan"))
    h_n, _, _ = forward("elman", xg, [a[3].float() for a in per_dir], h0, None if lengths is None else lengths.int(),
                        out, relu=nonlinearity == "relu", config=config)
    ref = [reference.elman_layer(x, *a[1:], nonlinearity=nonlinearity, reverse=d == 1, lengths=lengths)
           for d, a in enumerate(per_dir)]
    assert_close(out, torch.cat([r[0] for r in ref], dim=-1), name="out", dtype=F32, T=T)
    assert_close(h_n, torch.stack([r[1] for r in ref]), name="h_n", dtype=F32, T=T)


def test_tanh_saturates_without_nan():
    T, B, H = 50, 2, 4
    x = torch.linspace(-1, 1, T * B).reshape(T, B, 1)
    w_ih, w_hh = torch.full((H, 1), 1e5), torch.full((H, H), 1e3)
    out, h_n = fused.elman_layer(x, torch.zeros(B, H), w_ih, w_hh)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], torch.sign(x[0]).expand(B, H))


def test_tanh_keeps_its_relative_accuracy_near_zero():
    """tanh(x) for tiny x as exp-based (1 - e) / (1 + e) would cancel (1e-3 relative at 1e-5)."""
    x = torch.tensor([1e-7, -1e-6, 1e-5, 3e-4, -1e-3, 0.03, 0.0624, 0.0626, 0.2, -0.7]).reshape(1, -1, 1)
    B, H = x.shape[1], 1
    out, _ = fused.elman_layer(x, torch.zeros(B, H), torch.ones(H, 1), torch.zeros(H, H))
    torch.testing.assert_close(out.flatten(), torch.tanh(x.double()).float().flatten(), atol=0, rtol=1e-6)


def test_unknown_nonlinearity():
    x, h0, *w = [a.detach().float() for a in layer_args("elman", 2, 2, 3, 5)]
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'."):
        fused.elman_layer(x, h0, *w, nonlinearity="sigmoid")


def test_double_backward_points_to_reference():
    x, h0, *w = [a.detach().float().requires_grad_() for a in layer_args("elman", 2, 2, 3, 5)]
    out, h_n = fused.elman_layer(x, h0, *w)
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)  # allowed: torch.func.grad asks for it
    with pytest.raises(RuntimeError, match="backend='reference'"):
        torch.autograd.grad(gx.pow(2).sum(), x)  # the second derivative is what raises
