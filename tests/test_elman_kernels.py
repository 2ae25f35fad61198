"""kernels/elman.py through fastrnn.fused.elman_layer, against the float64 reference (interpreter on CPU)."""
import pytest
import torch

from fastrnn import fused

from layer_cases import SMALL_TILES, case_id, check_bidirectional, check_layer, layer_args

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


def test_tanh_saturates_without_nan():
    T, B, H = 50, 2, 4
    x = torch.linspace(-1, 1, T * B).reshape(T, B, 1)
    w_ih, w_hh = torch.full((H, 1), 1e5), torch.full((H, H), 1e3)
    out, h_n = fused.elman_layer(x, torch.zeros(B, H), w_ih, w_hh)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], torch.sign(x[0]).expand(B, H))


def test_unknown_nonlinearity():
    x, h0, *w = [a.detach().float() for a in layer_args("elman", 2, 2, 3, 5)]
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'."):
        fused.elman_layer(x, h0, *w, nonlinearity="sigmoid")


def test_double_backward_points_to_reference():
    x, h0, *w = [a.detach().float().requires_grad_() for a in layer_args("elman", 2, 2, 3, 5)]
    out, h_n = fused.elman_layer(x, h0, *w)
    with pytest.raises(RuntimeError, match="backend='reference'"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
