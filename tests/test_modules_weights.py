"""A parameter replaced by hand with one of the wrong shape, dtype or device raises before anything
runs, on every backend, with torch's message where torch has one. (torch.nn.RNN raises from its
matmuls; torch.nn.LSTM on CPU runs such weights through oneDNN and returns garbage, and fastrnn's
reference and triton backends used to give a result too, sometimes read from past a tensor's end.)
"""
import re

import pytest
import torch

import fastrnn
from fastrnn import cellspec

T, B, I, H = 5, 3, 4, 6


def _replace(model, name, value):
    setattr(model, name, torch.nn.Parameter(value))


def _cases(G):
    """(parameter, replacement(like), message) for a module with G gates."""
    return [
        ("weight_hh_l0", lambda w: torch.randn(G * H, 5), "mat1 and mat2 shapes cannot be multiplied (3x6 and 5x"),
        ("weight_hh_l0", lambda w: torch.randn(G * H + 1, H), f"Expected weight_hh_l0 of shape ({G * H}, 6), got"),
        ("weight_hh_l0", lambda w: torch.randn(G * H * H), "mat2 must be a matrix, got 1-D tensor"),
        ("weight_ih_l0", lambda w: torch.randn(G * H, 5), "mat1 and mat2 shapes cannot be multiplied (15x4 and 5x"),
        ("weight_hh_l0", lambda w: w.double(), "self and mat2 must have the same dtype, but got Float and Double"),
        ("weight_hh_l0", lambda w: w.half(), "self and mat2 must have the same dtype, but got Float and Half"),
        ("bias_hh_l0", lambda w: w.double(), "self and mat2 must have the same dtype, but got Double and Float"),
        ("bias_hh_l0", lambda w: torch.randn(3), f"Expected bias_hh_l0 of shape ({G * H},), got (3,)"),
        ("weight_hh_l0", lambda w: torch.empty(w.shape, device="meta"),
         "Input and parameter tensors are not at the same device, found input tensor at cpu and parameter "
         "tensor at meta"),
        ("weight_ih_l1", lambda w: torch.randn(G * H, 5), "mat1 and mat2 shapes cannot be multiplied (15x12 and 5x"),
        ("weight_hh_l1_reverse", lambda w: torch.randn(G * H, 7), "mat1 and mat2 shapes cannot be multiplied"),
    ]


@pytest.mark.parametrize("case", range(11))
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_wrong_parameter_raises_before_anything_runs(cell, case, backend):
    G = cellspec.of(cell).gates
    name, make, message = _cases(G)[case]
    model = getattr(fastrnn, cell)(I, H, num_layers=2, bidirectional=True, backend=backend)
    _replace(model, name, make(getattr(model, name).detach()))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        model(torch.randn(T, B, I))


@pytest.mark.parametrize("case", [0, 2, 3, 4, 8])
def test_the_message_is_torch_nn_rnns_own(case):
    """Where torch.nn.RNN raises (its matmuls do), fastrnn says exactly the same."""
    name, make, message = _cases(1)[case]
    theirs = torch.nn.RNN(I, H, num_layers=2, bidirectional=True)
    _replace(theirs, name, make(getattr(theirs, name).detach()))
    with pytest.raises(RuntimeError, match=re.escape(message)):
        theirs(torch.randn(T, B, I))


def test_a_wrong_projection_raises(backend):
    model = fastrnn.LSTM(I, H, proj_size=3, backend=backend)
    _replace(model, "weight_hr_l0", torch.randn(3, 5))
    with pytest.raises(RuntimeError, match=re.escape("Expected weight_hr_l0 of shape (3, 6), got (3, 5)")):
        model(torch.randn(T, B, I))


def test_packed_input_is_checked_too(backend):
    model = fastrnn.LSTM(I, H, backend=backend)
    _replace(model, "weight_hh_l0", torch.randn(4 * H + 1, H))
    packed = torch.nn.utils.rnn.pack_sequence([torch.randn(5, I), torch.randn(3, I)])
    with pytest.raises(RuntimeError, match="Expected weight_hh_l0 of shape"):
        model(packed)


@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_refuse_a_wrong_weight(cell, backend):
    """torch.nn's cells raise their own errors on "aten"; the other backends raise fastrnn's."""
    G = cellspec.of(cell).gates
    model = getattr(fastrnn, cell)(I, H, backend=backend)
    _replace(model, "weight_hh", torch.randn(G * H, 5))
    with pytest.raises(RuntimeError):
        model(torch.randn(B, I))
    _replace(model, "weight_hh", torch.randn(G * H, H))
    _replace(model, "bias_ih", torch.randn(G * H + 2))
    with pytest.raises(RuntimeError, match=re.escape(f"Expected bias_ih of shape ({G * H},)")
                       if backend != "aten" else "."):
        model(torch.randn(B, I))


def test_the_functional_api_checks_too():
    model = fastrnn.RNN(I, H)
    weights = [(model.weight_ih_l0, torch.randn(H, 5), model.bias_ih_l0, model.bias_hh_l0)]
    with pytest.raises(RuntimeError, match=re.escape("mat1 and mat2 shapes cannot be multiplied (3x6 and 5x6)")):
        fastrnn.rnn_stack(torch.randn(T, B, I), torch.zeros(1, B, H), weights, mode="RNN_TANH", num_layers=1,
                          bidirectional=False, backend="reference")


@pytest.mark.parametrize("lengths", [[6, 2, 1], [2, -1, 1], [2, 1]], ids=["past-T", "negative", "too-few"])
def test_the_functional_api_checks_lengths(lengths, backend):
    """The reference read a length past T as T and aten failed inside its packing."""
    model = fastrnn.RNN(I, H)
    weights = [(model.weight_ih_l0, model.weight_hh_l0, model.bias_ih_l0, model.bias_hh_l0)]
    with pytest.raises(ValueError, match="lengths must"):
        fastrnn.rnn_stack(torch.randn(4, B, I), torch.zeros(1, B, H), weights, mode="RNN_TANH", num_layers=1,
                          bidirectional=False, lengths=torch.tensor(lengths), backend=backend)
