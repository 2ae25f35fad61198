"""torch.func and forward-mode AD on every backend (fastrnn/transforms.py).

grad, jacrev and vmap must give the float64 reference's answer on every backend (torch.nn's own
vmap fails on CPU: ATen has no batching rule for its RNN ops; fastrnn's aten backend runs them as
an opaque op under vmap). Forward-mode AD gives the reference's tangent where the backend has one
and otherwise raises an error that names a backend that can; it is never silently zero, and
neither is a second derivative through the fused kernels.
"""
import functools

import pytest
import torch

import fastrnn
from fastrnn import BackendError
from fastrnn.testing import assert_close

T, B, I, H = 4, 3, 5, 6
MODULES = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]


def _pair(name, backend, size=(I, H)):
    """(fastrnn module on `backend` in float32, the same weights on the float64 reference)."""
    torch.manual_seed(0)
    model = getattr(fastrnn, name)(*size, backend=backend)
    ref = getattr(fastrnn, name)(*size, backend="reference", dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    return model, ref


def _input(name, *shape):
    shape = shape or ((B, I) if name.endswith("Cell") else (T, B, I))
    return torch.randn(*shape)


def _h(model):
    """The module's first output (the output sequence, or a cell's h), one tensor."""
    def f(x):
        out = model(x)
        return out[0] if isinstance(out, tuple) else out
    return f


@pytest.mark.parametrize("backend", ["reference", "aten", "triton"])
@pytest.mark.parametrize("name", MODULES)
def test_grad_jacrev_and_vmap_match_the_reference(name, backend):
    model, ref = _pair(name, backend)
    x = _input(name)
    f, f64 = _h(model), _h(ref)
    loss = lambda g: lambda x: g(x).pow(2).sum()
    assert_close(torch.func.grad(loss(f))(x), torch.func.grad(loss(f64))(x.double()), name="grad", T=T)
    assert_close(torch.func.jacrev(f)(x), torch.func.jacrev(f64)(x.double()), name="jacrev", T=T)
    xs = torch.stack([x, _input(name)])
    want = torch.stack([f64(xi.double()) for xi in xs])
    assert_close(torch.func.vmap(f)(xs), want, name="vmap", T=T)


@pytest.mark.parametrize("backend", ["reference", "aten", "triton"])
def test_grad_of_functional_call_reaches_every_parameter(backend):
    """The usual torch.func training idiom: gradients with respect to the parameters."""
    model, ref = _pair("LSTM", backend)
    x = _input("LSTM")

    def loss(m, params, x):
        return torch.func.functional_call(m, params, (x,))[0].pow(2).sum()

    params = dict(model.named_parameters())
    got = torch.func.grad(functools.partial(loss, model))(params, x)
    want = torch.func.grad(functools.partial(loss, ref))(dict(ref.named_parameters()), x.double())
    for k in params:
        assert_close(got[k], want[k], name=k, T=T)


@pytest.mark.parametrize("name", ["LSTM", "RNN", "GRU"])
def test_aten_grad_and_vmap_at_a_realistic_size(name):
    """Where oneDNN runs torch's CPU RNNs (not at tiny sizes)."""
    model, ref = _pair(name, "aten", size=(64, 128))
    x = torch.randn(32, 4, 64)
    f, f64 = _h(model), _h(ref)
    loss = lambda g: lambda x: g(x).pow(2).sum()
    assert_close(torch.func.grad(loss(f))(x), torch.func.grad(loss(f64))(x.double()), name="grad", T=32)
    xs = torch.stack([x, torch.randn(32, 4, 64)])
    assert_close(torch.func.vmap(f)(xs), torch.stack([f64(xi.double()) for xi in xs]), name="vmap", T=32)


@pytest.mark.parametrize("name", ["RNN", "RNNCell", "GRU", "GRUCell"])
@pytest.mark.parametrize("backend", ["reference", "aten"])
def test_forward_mode_ad_matches_the_reference(name, backend):
    model, ref = _pair(name, backend)
    x, t = _input(name), _input(name)
    _, got = torch.func.jvp(_h(model), (x,), (t,))
    _, want = torch.func.jvp(_h(ref), (x.double(),), (t.double(),))
    assert got.abs().sum() > 0
    assert_close(got, want, name="tangent", T=T)


def _forward_ad(f, x, t):
    with torch.autograd.forward_ad.dual_level():
        return torch.autograd.forward_ad.unpack_dual(f(torch.autograd.forward_ad.make_dual(x, t))).tangent


@pytest.mark.parametrize("name", MODULES)
def test_forward_mode_ad_on_triton_raises_and_names_the_reference(name):
    """It used to return zero tangents: the op had no tangent formula and saw nothing requiring grad."""
    model, _ = _pair(name, "triton")
    f, x, t = _h(model), _input(name), _input(name)
    for transform in (lambda: torch.func.jvp(f, (x,), (t,)), lambda: torch.func.jacfwd(f)(x),
                      lambda: torch.func.hessian(lambda x: f(x).sum())(x), lambda: _forward_ad(f, x, t)):
        with pytest.raises(BackendError, match="no forward-mode AD.*backend='reference'"):
            transform()


def test_second_reverse_derivative_on_triton_raises():
    model, _ = _pair("RNN", "triton")
    with pytest.raises(RuntimeError, match="no double backward.*backend='reference'"):
        torch.func.jacrev(torch.func.jacrev(lambda x: _h(model)(x).sum()))(_input("RNN"))


@pytest.mark.parametrize("backend", ["reference", "aten", "triton"])
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_vmap_over_parameters_or_hx_alone(name, backend):
    """Only the weights (an ensemble through functional_call), or only hx, batched: the input is
    shared. torch's own RNN op has no batching rule, so aten must notice these too."""
    models = [_pair(name, backend)[0] for _ in range(2)]
    for m in models[1:]:
        for p in m.parameters():
            torch.nn.init.uniform_(p, -0.5, 0.5)
    x = _input(name)
    stacked = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in models]) for k, _ in
               models[0].named_parameters()}
    got = torch.func.vmap(lambda p: torch.func.functional_call(models[0], p, (x,))[0])(stacked)
    assert_close(got, torch.stack([m(x)[0] for m in models]), name="vmap over parameters", T=T)
    h0 = torch.randn(2, 1, B, H)
    hx = (lambda h: (h, torch.zeros_like(h))) if name == "LSTM" else (lambda h: h)
    got = torch.func.vmap(lambda h: models[0](x, hx(h))[0])(h0)
    assert_close(got, torch.stack([models[0](x, hx(h))[0] for h in h0]), name="vmap over hx", T=T)
