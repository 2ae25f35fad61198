"""Backward in eval mode (cuDNN refuses it; fastrnn does not), and double backward through the
reference backend, checked against torch.nn on CPU (whose native loop supports both)."""
import pytest
import torch

import fastrnn

T, B, I, H = 3, 2, 3, 4


def _pair(cell, backend, dtype=torch.float32):
    torch.manual_seed(0)
    ref = getattr(torch.nn, cell)(I, H, num_layers=2, dropout=0.5, dtype=dtype)
    model = getattr(fastrnn, cell)(I, H, num_layers=2, dropout=0.5, backend=backend, dtype=dtype)
    model.load_state_dict(ref.state_dict())
    return model.eval(), ref.eval()


@pytest.mark.parametrize("backend", ["reference", "aten", "triton"])
@pytest.mark.parametrize("cell", ["LSTM", "RNN", "GRU"])
def test_backward_in_eval_mode_matches_torch(cell, backend):
    model, ref = _pair(cell, backend)
    x = torch.randn(T, B, I, requires_grad=True)
    got, want = model(x), ref(x)
    leaves_g, leaves_w = torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)
    cot = [torch.randn_like(t) for t in leaves_w]
    grads = torch.autograd.grad(leaves_g, [x, *model.parameters()], cot)
    ref_grads = torch.autograd.grad(leaves_w, [x, *ref.parameters()], cot)
    for g, w in zip(grads, ref_grads):  # eval: no dropout, so the gradients are deterministic
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["LSTM", "RNN", "GRU"])
def test_double_backward_through_reference_matches_torch(cell):
    """d/dparams of |dL/dx|^2 (a gradient penalty) equals torch.nn's, in float64."""
    model, ref = _pair(cell, "reference", torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)

    def penalty_grads(m):
        out = m(x)[0]
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), list(m.parameters()))

    for g, w in zip(penalty_grads(model), penalty_grads(ref)):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_double_backward_gradgradcheck_reference(cell):
    torch.manual_seed(0)
    model = getattr(fastrnn, cell)(2, 2, backend="reference", dtype=torch.float64)
    x = torch.randn(2, 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: model(x)[0], (x,))


@pytest.mark.parametrize("cell", ["LSTM", "RNN", "GRU"])
def test_double_backward_on_triton_points_to_reference(cell):
    model, _ = _pair(cell, "triton")
    x = torch.randn(T, B, I, requires_grad=True)
    # create_graph=True alone is allowed (torch.func.grad always asks for it); the second derivative raises
    (gx,) = torch.autograd.grad(model(x)[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="use backend='reference' for higher-order gradients"):
        torch.autograd.grad(gx.pow(2).sum(), x)
