"""NaN and Inf in the input, hx or any weight propagate exactly as in torch.nn, on every backend,
cell and direction: the same positions come out NaN, +Inf and -Inf, and the finite rest agrees.
(Triton's tl.maximum drops NaN, so a ReLU written with it turned NaN into 0.)"""
import pytest
import torch

import fastrnn
from fastrnn.testing import tolerances

T, B, I, H = 4, 3, 5, 6
MODULES = {"RNN-tanh": ("RNN", {}), "RNN-relu": ("RNN", {"nonlinearity": "relu"}), "LSTM": ("LSTM", {}),
           "GRU": ("GRU", {}), "RNNCell-relu": ("RNNCell", {"nonlinearity": "relu"}), "LSTMCell": ("LSTMCell", {}),
           "GRUCell": ("GRUCell", {})}
# bias_hh-last: its last gate's block (the GRU's b_hn, inside the reset product)
WHERE = ["input", "hx", "weight_ih", "weight_hh", "bias_hh", "bias_hh-last"]


def _poison(t, value, index):
    t = t.detach().clone()
    t.view(-1)[index % t.numel()] = value
    return t


def _assert_same_nonfinite(got, want, name):
    for kind, test in (("NaN", torch.isnan), ("+Inf", torch.isposinf), ("-Inf", torch.isneginf)):
        assert torch.equal(test(got), test(want)), f"{name}: {kind} positions differ from torch.nn's"
    finite = torch.isfinite(want)
    atol, rtol = tolerances(torch.float32, T)
    torch.testing.assert_close(got[finite], want[finite], atol=atol, rtol=rtol)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("name", MODULES)
def test_non_finite_values_propagate_as_in_torch(name, where, value, backend):
    cls, kwargs = MODULES[name]
    cell = cls.endswith("Cell")
    if not cell:
        kwargs = dict(kwargs, bidirectional=True)  # both directions, each from its own end
    torch.manual_seed(0)
    want_model = getattr(torch.nn, cls)(I, H, **kwargs)
    model = getattr(fastrnn, cls)(I, H, backend=backend, **kwargs)
    x = torch.randn((B, I) if cell else (T, B, I))
    state_shape = (B, H) if cell else (2, B, H)
    hx = torch.randn(state_shape)
    if where == "input":
        x = _poison(x, value, 7)
    elif where == "hx":
        hx = _poison(hx, value, 4)
    else:
        suffix = "" if cell else "_l0_reverse"  # the reverse direction's weights
        name_, index = ("bias_hh", -1) if where == "bias_hh-last" else (where, 3)
        name_ += suffix
        setattr(want_model, name_, torch.nn.Parameter(_poison(getattr(want_model, name_), value, index)))
    model.load_state_dict(want_model.state_dict())
    states = (hx, torch.randn(state_shape)) if "LSTM" in cls else hx
    got, want = model(x, states), want_model(x, states)
    for i, (g, w) in enumerate(zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want))):
        _assert_same_nonfinite(g, w, f"{name} output {i}")
