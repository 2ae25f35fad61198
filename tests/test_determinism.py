"""Same inputs, same bits: outputs and every gradient are bitwise identical from run to run.

No backend reduces with atomics: the fused backward kernels give each program whole batch rows and
loop over time in a fixed order, and the weight gradients are GEMMs over all steps; the reference
is a fixed sequence of torch ops; aten is torch's own loop. Each case runs forward and backward
twice on fresh copies of the same inputs and compares with torch.equal (not a tolerance).
"""
import pytest
import torch

import fastrnn
from fastrnn import aten

T, B, I, H = 4, 3, 3, 5


def _run_module(cell, backend, lengths):
    torch.manual_seed(0)
    kwargs = {"LSTM": dict(proj_size=3), "RNN": dict(nonlinearity="relu"), "GRU": {}}[cell]
    model = getattr(fastrnn, cell)(I, H, num_layers=2, bidirectional=True, backend=backend, **kwargs)
    x = torch.randn(T, B, I, requires_grad=True)
    if lengths is None:
        out, state = model(x)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        out, state = model(packed)
        out = out.data
    leaves = [out, *torch.utils._pytree.tree_leaves(state)]
    grads = torch.autograd.grad(leaves, [x, *model.parameters()], [torch.randn_like(t) for t in leaves])
    return [t.detach() for t in leaves] + list(grads)


def _run_aten_layer(lengths):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H)  # no projection: the oneDNN fused-cell path torch.nn takes on CPU
    x = torch.randn(T, B, I, requires_grad=True)
    h0, c0 = torch.randn(2, B, H), torch.randn(2, B, H)
    lens = None if lengths is None else torch.tensor(lengths)
    weights = [(*ref.parameters(), None)] * 2  # both directions: the reverse walk included
    leaves = aten.layer_directions(x, h0, c0, weights, mode="LSTM", lengths=lens)
    grads = torch.autograd.grad(leaves, [x, *ref.parameters()], [torch.randn_like(t) for t in leaves])
    return [t.detach() for t in leaves] + list(grads)


def _assert_bitwise(first, second):
    assert len(first) == len(second)
    for i, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"tensor {i} differs between runs (max diff {(a - b).abs().max()})"


@pytest.mark.parametrize("lengths", [None, [4, 1, 3]], ids=["full", "packed"])
@pytest.mark.parametrize("backend", ["reference", "aten", "triton"])
@pytest.mark.parametrize("cell", ["LSTM", "RNN", "GRU"])
def test_module_runs_are_bitwise_identical(cell, backend, lengths):
    _assert_bitwise(_run_module(cell, backend, lengths), _run_module(cell, backend, lengths))


@pytest.mark.parametrize("lengths", [None, [4, 1, 3]], ids=["full", "lengths"])
def test_aten_layer_runs_are_bitwise_identical(lengths):
    _assert_bitwise(_run_aten_layer(lengths), _run_aten_layer(lengths))
