"""torch.jit.script of fastrnn's modules and cells, and of a model after `convert`: it compiles
(through `__prepare_scriptable__`), the scripted module shares the Parameters, and it gives the same
outputs as the module. (torch 2.13 cannot script torch.nn.RNN / LSTM themselves.)"""
import copy

import pytest
import torch

import fastrnn

T, B, I, H = 5, 3, 4, 6
MODULES = {
    "RNN-relu-bi-bf": ("RNN", dict(nonlinearity="relu", bidirectional=True, batch_first=True, num_layers=2)),
    "LSTM-proj-bi": ("LSTM", dict(proj_size=3, bidirectional=True)),
    "LSTM-nobias": ("LSTM", dict(bias=False)),
    "GRU-bi-bf": ("GRU", dict(bidirectional=True, batch_first=True, num_layers=2)),
    "GRU-nobias": ("GRU", dict(bias=False)),
    "RNNCell": ("RNNCell", {}),
    "LSTMCell": ("LSTMCell", {}),
    "GRUCell": ("GRUCell", {}),
}


def _leaves(out):
    return torch.utils._pytree.tree_leaves(out)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", MODULES)
def test_scripted_module_gives_the_same_outputs(name, backend):
    cls, kwargs = MODULES[name]
    torch.manual_seed(0)
    model = getattr(fastrnn, cls)(I, H, backend=backend, **kwargs).eval()
    scripted = torch.jit.script(model)
    assert {id(p) for p in scripted.parameters()} == {id(p) for p in model.parameters()}
    cell = cls.endswith("Cell")
    inputs = [torch.randn(B, I), torch.randn(I)] if cell else [torch.randn(B, T, I) if model.batch_first
                                                                  else torch.randn(T, B, I), torch.randn(T, I)]
    for x in inputs:
        for got, want in zip(_leaves(scripted(x)), _leaves(model(x)), strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    if not cell:  # with a given hx too
        x = inputs[0]
        D = 2 if model.bidirectional else 1
        R = model.proj_size or H
        h0 = torch.randn(model.num_layers * D, B, R)
        hx = (h0, torch.randn(model.num_layers * D, B, H)) if cls == "LSTM" else h0
        for got, want in zip(_leaves(scripted(x, hx)), _leaves(model(x, hx)), strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_converted_model_scripts():
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(I, H, batch_first=True)
            self.cell = torch.nn.RNNCell(H, H)
            self.head = torch.nn.Linear(H, 2)

        def forward(self, x):
            out, (h, c) = self.rnn(x)
            return self.head(self.cell(out[:, -1]))

    torch.manual_seed(0)
    model = fastrnn.convert(Tagger()).eval()
    x = torch.randn(B, T, I)
    want = model(x)
    # torch.jit.script writes what __prepare_scriptable__ returns back into the parent module, so a
    # copy is scripted to keep the model itself on fastrnn's forward (the README says so)
    torch.testing.assert_close(torch.jit.script(copy.deepcopy(model))(x), want, atol=1e-6, rtol=1e-5)
    assert isinstance(model.rnn, fastrnn.LSTM) and isinstance(model.cell, fastrnn.RNNCell)


BAD_CALLS = {  # what the scripted twin must refuse as the module does (ATen reads hx unchecked)
    "hx-hidden": lambda m, x: m(x, (torch.zeros(1, B, H + 1), torch.zeros(1, B, H + 1))),
    "hx-batch-larger": lambda m, x: m(x, (torch.zeros(1, B + 1, H), torch.zeros(1, B + 1, H))),
    "hx-batch-smaller": lambda m, x: m(x, (torch.zeros(1, 1, H), torch.zeros(1, 1, H))),
    "c-batch": lambda m, x: m(x, (torch.zeros(1, B, H), torch.zeros(1, 1, H))),
    "unbatched-3d-hx": lambda m, x: m(x[:, 0], (torch.zeros(1, 1, H), torch.zeros(1, 1, H))),
    "input-size": lambda m, x: m(torch.randn(T, B, I + 3)),
    "input-4d": lambda m, x: m(x[None]),
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("case", BAD_CALLS)
def test_scripted_module_refuses_bad_input_and_hx_as_the_module_does(case):
    model = fastrnn.LSTM(I, H)
    scripted, x = torch.jit.script(model), torch.randn(T, B, I)
    with pytest.raises(Exception) as eager:
        BAD_CALLS[case](model, x)
    with pytest.raises(Exception) as script:
        BAD_CALLS[case](scripted, x)
    assert str(eager.value) in str(script.value)  # TorchScript wraps the message in its traceback


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["RNN", "GRU"])
def test_scripted_one_state_module_refuses_a_3d_hx_with_unbatched_input(name):
    model = getattr(fastrnn, name)(I, H)
    with pytest.raises(Exception, match="For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"):
        torch.jit.script(model)(torch.randn(T, I), torch.zeros(1, 1, H))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_scripted_module_says_what_the_module_says_for_4d_input(name):
    model = getattr(fastrnn, name)(I, H, backend="reference")
    x = torch.randn(1, T, B, I)
    with pytest.raises(ValueError) as eager:
        model(x)
    with pytest.raises(Exception) as script:
        torch.jit.script(model)(x)
    assert str(eager.value) in str(script.value)
