"""Small differences from torch.nn found by a hostile tester, each locked on every backend:
the meta device, dtype names in messages, what LSTMCell accepts as hx, and cell dtypes under CPU
autocast."""
import pytest
import torch

import fastrnn
from fastrnn import BackendError
from fastrnn.testing import tolerances

T, B, I, H = 5, 3, 4, 6


def _leaves(out):
    return torch.utils._pytree.tree_leaves(out)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"])
def test_forward_on_meta_gives_torch_nns_meta_outputs_on_every_backend(name, backend):
    """Shape inference and deferred init: torch.nn returns meta outputs; fastrnn used to crash
    ('unknown device type for autocast')."""
    kw = {"proj_size": 2, "num_layers": 2, "bidirectional": True} if name == "LSTM" else {}
    ours = getattr(fastrnn, name)(I, H, device="meta", backend=backend, **kw)
    theirs = getattr(torch.nn, name)(I, H, device="meta", **kw)
    x = torch.randn(*([] if "Cell" in name else [T]), B, I, device="meta")
    got, want = _leaves(ours(x)), _leaves(theirs(x))
    assert [(t.device.type, t.shape, t.dtype) for t in got] == [(t.device.type, t.shape, t.dtype) for t in want]


def test_integer_input_names_the_dtype_as_torch_does(backend):
    with pytest.raises(RuntimeError, match="^mat1 and mat2 must have the same dtype, but got Long and Float$"):
        fastrnn.RNNCell(I, H, backend=backend)(torch.ones(B, I, dtype=torch.long))
    with pytest.raises(RuntimeError, match="^mat1 and mat2 must have the same dtype, but got Long and Float$"):
        torch.nn.RNNCell(I, H)(torch.ones(B, I, dtype=torch.long))


def test_lstm_cell_refuses_one_tensor_as_hx(backend):
    message = "lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not Tensor"
    for cell in (fastrnn.LSTMCell(I, H, backend=backend), torch.nn.LSTMCell(I, H)):
        with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            cell(torch.randn(B, I), torch.randn(2, B, H))


def test_lstm_cell_promotes_a_float64_c_like_torch(backend):
    """torch.nn.LSTMCell accepts float64 c with float32 h and returns float64 h and c; triton,
    which keeps states in the input's dtype, says so instead of returning float32."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTMCell(I, H)
    ours = fastrnn.LSTMCell(I, H, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    x, hx = torch.randn(B, I), (torch.randn(B, H), torch.randn(B, H, dtype=torch.float64))
    if backend == "triton":
        with pytest.raises(BackendError, match="backend='reference'"):
            ours(x, hx)
        return
    for got, want in zip(ours(x, hx), theirs(x, hx), strict=True):
        assert got.dtype == want.dtype == torch.float64
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell", "GRU"])
def test_cells_under_cpu_autocast_return_torch_nns_dtype(name, backend):
    """torch.nn.RNNCell returns bf16 under CPU bf16 autocast (its linear ops are on the list),
    torch.nn.LSTMCell, GRUCell and GRU float32 (lstm_cell, gru_cell and gru are not); triton's
    LSTMCell used to return bf16."""
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(I, H)
    ours = getattr(fastrnn, name)(I, H, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(B, I) if "Cell" in name else torch.randn(T, B, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = _leaves(ours(x)), _leaves(theirs(x))
    assert [t.dtype for t in got] == [t.dtype for t in want]
    for g, w in zip(got, want):
        atol, rtol = tolerances(torch.bfloat16, 1 if "Cell" in name else T)
        torch.testing.assert_close(g.float(), w.float(), atol=atol, rtol=rtol)


def test_convert_sets_the_backend_on_modules_that_already_are_fastrnns():
    model = torch.nn.Sequential(fastrnn.LSTM(I, H, backend="reference"), torch.nn.RNN(H, H),
                                fastrnn.RNNCell(I, H, backend="aten"))
    fastrnn.convert(model, backend="triton")
    assert [m.backend for m in model] == ["triton"] * 3


@pytest.mark.parametrize("form", ["bf16-x", "bf16-hx"])
def test_lstm_cell_under_cpu_autocast_takes_bf16_input_as_torch_does(form, backend):
    """torch's LSTMCell does its GEMMs in bf16 and returns c's dtype: bf16 here."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTMCell(I, H)
    ours = fastrnn.LSTMCell(I, H, backend=backend)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(B, I)
    args = (x.bfloat16(),) if form == "bf16-x" else (x, (torch.randn(B, H).bfloat16(), torch.randn(B, H).bfloat16()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = ours(*args), theirs(*args)
    atol, rtol = tolerances(torch.bfloat16)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == torch.bfloat16
        torch.testing.assert_close(g.float(), w.float(), atol=atol, rtol=rtol)
