"""The GRU on the kernel skeleton (kernels/recurrence.py) through fastrnn.fused, on every strategy
the interpreter runs, against the float64 reference."""
import pytest
import torch

from fastrnn import fused

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
    # (T, B, I, H, dtype, reverse, lengths, config)
    (5, 3, 4, 7, F32, False, None, None),
    (5, 3, 4, 7, F16, True, None, None),
    (5, 3, 4, 7, BF16, False, MIXED, None),
    (5, 3, 4, 7, F32, True, MIXED, None),
    (1, 1, 3, 7, F32, True, [1], None),
    # three hidden tiles, two batch tiles, streamed weights; and the resident pieces path
    (4, 20, 6, 40, F32, True, [4, 1, 3, 2] * 5, SMALL_TILES),
    (4, 17, 6, 40, BF16, False, None, SMALL_TILES),
    (4, 3, 6, 40, F32, False, [4, 1, 3], dict(SMALL_TILES, BLOCK_H=64, W_RESIDENT=True, PIECES=3)),
    (3, 2, 5, 130, F32, False, [3, 2], None),
    (48, 2, 3, 9, F32, True, [48, 30], None),
]


@pytest.mark.parametrize(
    "T,B,I,H,dtype,reverse,lengths,config", CASES,
    ids=[case_id("gru", c[0], c[1], c[3], c[4], rev=c[5], len=c[6] is not None, tiles=c[7] is not None)
         for c in CASES])
def test_gru_layer_matches_reference(T, B, I, H, dtype, reverse, lengths, config):
    args = layer_args("gru", T, B, I, H)
    check_layer(fused.gru_layer, "gru", args, dtype, lengths=lengths, reverse=reverse, config=config)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_gru_bidirectional_matches_reference(bias):
    check_bidirectional(fused.gru_directions, "gru", 4, 3, 4, 7, bias=bias, lengths=[4, 2, 3])


def test_b_hn_stays_inside_the_reset_product():
    """With r = 0 (a huge negative reset bias) n sees no recurrent part at all, b_hn included; the
    published variant that adds b_hn outside the product would not."""
    x, h0, w_ih, w_hh, b_ih, b_hh = [a.detach().float() for a in layer_args("gru", 3, 2, 4, 5)]
    b_ih[:5] = -1e4  # r = sigmoid(-1e4) = 0
    b_hh[10:] = 7.0  # b_hn
    out, _ = fused.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh)
    z = torch.sigmoid(x[0] @ w_ih[5:10].T + b_ih[5:10] + h0 @ w_hh[5:10].T + b_hh[5:10])
    n = torch.tanh(x[0] @ w_ih[10:].T + b_ih[10:])
    torch.testing.assert_close(out[0], (1 - z) * n + z * h0, atol=1e-6, rtol=1e-5)
