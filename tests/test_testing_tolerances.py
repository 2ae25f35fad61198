"""The tolerance table at long sequences: capped growth still catches real bugs at T=512 in every
dtype, and still passes the right answer computed in that dtype (fastrnn/testing/compare.py); for
the LSTM and the GRU."""
from unittest import mock

import pytest
import torch

from fastrnn import reference
from fastrnn.testing import assert_close, tolerances
from fastrnn.testing.compare import GROWTH_CAP

from layer_cases import layer_args
from module_cases import gru_cell_bhn_outside_reset

T = 512
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
SIZES = [(4, 8, 16), (4, 8, 32)]  # (B, I, H)


def _dtype_id(dtype):
    return str(dtype).replace("torch.", "")


def _swap_i_f(w):
    """Gate rows read as f|i|g|o instead of i|f|g|o."""
    i, f, g, o = w.chunk(4, 0)
    return torch.cat([f, i, g, o])


def _swap_r_z(w):
    """GRU gate rows read as z|r|n instead of r|z|n."""
    r, z, n = w.chunk(3, 0)
    return torch.cat([z, r, n])


def _args(dtype, B, I, H):
    """float64 leaves (x, h0, c0, w_ih, w_hh, b_ih, b_hh) holding values exact in `dtype`, so the
    float64 reference of them is the exact answer a `dtype` implementation approximates."""
    args = layer_args("lstm", T, B, I, H)[:-1]
    return [a.detach().to(dtype).to(torch.float64).requires_grad_() for a in args]


def _gru_args(dtype, B, I, H):
    """The same for a GRU layer: (x, h0, w_ih, w_hh, b_ih, b_hh), weights ~ U(-1/sqrt(H), 1/sqrt(H))."""
    g = torch.Generator().manual_seed(0)
    rand = (lambda *shape, scale=H ** -0.5: (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale)
    args = [rand(T, B, I, scale=1.0), rand(B, H, scale=0.5), rand(3 * H, I), rand(3 * H, H), rand(3 * H), rand(3 * H)]
    return [a.to(dtype).to(torch.float64).requires_grad_() for a in args]


def _bhn_outside_reset(*args):
    with mock.patch.object(reference, "gru_cell", gru_cell_bhn_outside_reset):
        return reference.gru_layer(*args)


# cell -> (float64 arguments, reference layer, {mutant: its wrong layer})
CELLS = {
    "lstm": (_args, reference.lstm_layer, {
        "swapped-i-f": lambda x, h0, c0, w_ih, w_hh, b_ih, b_hh: reference.lstm_layer(
            x, h0, c0, _swap_i_f(w_ih), _swap_i_f(w_hh), _swap_i_f(b_ih), _swap_i_f(b_hh)),
        "no-bias_hh": lambda x, h0, c0, w_ih, w_hh, b_ih, b_hh: reference.lstm_layer(
            x, h0, c0, w_ih, w_hh, b_ih, None)}),
    "gru": (_gru_args, reference.gru_layer, {
        "swapped-r-z": lambda x, h0, w_ih, w_hh, b_ih, b_hh: reference.gru_layer(
            x, h0, _swap_r_z(w_ih), _swap_r_z(w_hh), _swap_r_z(b_ih), _swap_r_z(b_hh)),
        "b_hn-outside-reset": _bhn_outside_reset}),
}
MUTANTS = [(cell, name) for cell, (_, _, mutants) in CELLS.items() for name in mutants]


def test_growth_stops_at_the_cap():
    for dtype in DTYPES:
        capped = tolerances(dtype, GROWTH_CAP)
        assert tolerances(dtype, T) == capped == tolerances(dtype, 10 ** 6)
        assert tolerances(dtype, 1) < tolerances(dtype, 4) < capped
    assert tolerances(torch.bfloat16, T)[0] < 0.07  # uncapped it was 0.36 on values bounded by 1


@pytest.mark.parametrize("B,I,H", SIZES, ids=[f"H{s[2]}" for s in SIZES])
@pytest.mark.parametrize("cell,mutant", MUTANTS, ids=[f"{c}-{m}" for c, m in MUTANTS])
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_capped_table_catches_a_real_bug_at_T512(dtype, cell, mutant, B, I, H):
    """The reference with a mutated weight set or step, rounded to `dtype`, must fail against the
    float64 reference with `dtype`'s tolerances for T=512."""
    make_args, layer, mutants = CELLS[cell]
    args = make_args(dtype, B, I, H)
    with torch.no_grad():
        expected = layer(*args)
        wrong = mutants[mutant](*args)
    with pytest.raises(AssertionError, match="elements differ"):
        assert_close(wrong[0].to(dtype), expected[0], name="out", dtype=dtype, T=T)


@pytest.mark.parametrize("B,I,H", SIZES, ids=[f"H{s[2]}" for s in SIZES])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_capped_table_passes_the_right_answer_at_T512(dtype, cell, B, I, H):
    """The reference run in `dtype` (rounding at every step, gradients accumulated in `dtype`:
    the largest long-sequence errors measured) passes: outputs, final states and, under random
    cotangents, the gradient of every input with the gradient rule of the kernel tests."""
    make_args, layer, _ = CELLS[cell]
    args64 = make_args(dtype, B, I, H)
    args = [a.detach().to(dtype).requires_grad_() for a in args64]
    expected, actual = layer(*args64), layer(*args)
    for name, a, e in zip(["out", "h_n", "c_n"], actual, expected):
        assert_close(a, e, name=name, dtype=dtype, T=T)
    g = torch.Generator().manual_seed(1)
    cots = [torch.randn(e.shape, generator=g, dtype=torch.float64) for e in expected]
    grads64 = torch.autograd.grad(expected, args64, cots)
    grads = torch.autograd.grad(actual, args, [c.to(dtype) for c in cots])
    atol, rtol = tolerances(dtype, T)
    names = ["x", "h0", "c0"][:len(args) - 4] + ["w_ih", "w_hh", "b_ih", "b_hh"]
    for name, a, e in zip(names, grads, grads64, strict=True):
        assert_close(a, e, name=f"grad {name}", atol=atol * max(1.0, e.abs().max().item()), rtol=rtol)
