"""Under CPU bfloat16 autocast, fastrnn modules return what torch.nn's return and the triton
backend runs its kernels in bfloat16 (the recurrent weights reach the op cast, like xg).

torch.nn.RNN and torch.nn.LSTM under CPU bf16 autocast return bf16 output and states; gradients
reach the fp32 parameters and input in fp32. torch.nn.GRU on CPU does only its GEMMs in bf16 and
returns float32 for float32 input; fastrnn's GRU computes in bf16 and returns float32 as well.
(CUDA fp16/bf16 autocast takes the same code path: fastrnn.fused casts to torch.get_autocast_dtype
of the input's device.)
"""
import pytest
import torch

import fastrnn
from fastrnn import cellspec, fused

T, B, I, H = 3, 2, 3, 8
CELLS = {"LSTM": (fastrnn.LSTM, torch.nn.LSTM), "RNN": (fastrnn.RNN, torch.nn.RNN), "GRU": (fastrnn.GRU, torch.nn.GRU)}


def _pair(cell, backend):
    ours, theirs = CELLS[cell]
    torch.manual_seed(0)
    ref = theirs(I, H, num_layers=2)
    model = ours(I, H, num_layers=2, backend=backend)
    model.load_state_dict(ref.state_dict())
    return model, ref


def _leaves(result):
    return torch.utils._pytree.tree_leaves(result)


@pytest.mark.parametrize("backend", ["auto", "reference", "aten", "triton"])
@pytest.mark.parametrize("cell", ["LSTM", "RNN", "GRU"])
def test_bf16_autocast_returns_what_torch_returns(cell, backend, torch_or_reference):
    """Against torch.nn, or against the float64 reference where torch.nn itself raises on this CPU
    (its LSTM under CPU autocast without AVX-512): there backend='aten' raises torch's error and
    every other backend, 'auto' included, still runs."""
    model, ref = _pair(cell, backend)
    x = torch.randn(T, B, I, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch_or_reference(ref, x)
        if backend == "aten" and want.torch_error is not None:
            with pytest.raises(RuntimeError) as info:
                model(x)
            assert str(info.value) == want.torch_error
            return
        got = model(x)
    want_dtype = torch.bfloat16 if want.torch_error is None else torch.float64
    got_dtype = torch.float32 if cell == "GRU" else torch.bfloat16  # see the module docstring
    for g, w in zip(_leaves(got), _leaves(want.result)):
        assert g.dtype == got_dtype and w.dtype == (got_dtype if cell == "GRU" else want_dtype)
        # bf16 rounds at every step: a few bf16 ulps from torch's bf16 run or the float64
        # reference, far below a wrong gate's error
        torch.testing.assert_close(g.double(), w.double(), atol=2e-2, rtol=2e-2)
    cot = [torch.randn(w.shape) for w in _leaves(want.result)]
    grads = torch.autograd.grad([g.float() for g in _leaves(got)], [x, *model.parameters()], cot)
    ref_grads = torch.autograd.grad([w.double() for w in _leaves(want.result)], want.leaves,
                                    [c.double() for c in cot])
    for g, w in zip(grads, ref_grads, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), w.double(), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("cell", ["LSTM", "RNN", "GRU"])
def test_triton_kernels_run_in_bf16_under_autocast(cell, monkeypatch):
    seen = []
    spec = cellspec.of(cell)
    real = getattr(fused.library, spec.name)

    def spy(xg, *rest):
        # (xg, w_hh) dtypes; xg and w_hh hold one tensor per direction, w_hh after the states
        seen.append((xg[0].dtype, rest[len(spec.states)][0].dtype))
        return real(xg, *rest)

    monkeypatch.setattr(fused.library, spec.name, spy)
    model, _ = _pair(cell, "triton")
    x = torch.randn(T, B, I)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert seen == [(torch.bfloat16, torch.bfloat16)] * 2
    seen.clear()
    with torch.no_grad():
        model(x)  # outside autocast nothing is cast
    assert seen == [(torch.float32, torch.float32)] * 2
