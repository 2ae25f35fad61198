"""fastrnn.convert / fastrnn.to_torch: in-place class swaps that keep every Parameter."""
import pytest
import torch

import fastrnn


class Tagger(torch.nn.Module):
    """A small model with each recurrent module kind, nested, plus a user subclass of nn.LSTM."""

    class MyLSTM(torch.nn.LSTM):
        pass

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(3, 4)
        self.lstm = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.rnn = torch.nn.RNN(12, 5, nonlinearity="relu")
        self.gru = torch.nn.GRU(5, 5, num_layers=2, bidirectional=True)
        self.cells = torch.nn.ModuleList([torch.nn.RNNCell(10, 5), torch.nn.LSTMCell(5, 5), torch.nn.GRUCell(5, 5)])
        self.mine = Tagger.MyLSTM(5, 5)
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x):  # x: [B, T, 3]
        y, _ = self.lstm(self.embed(x))
        y, h = self.rnn(y.transpose(0, 1))
        y, _ = self.gru(y)
        h1 = self.cells[0](y[-1])
        h2, _ = self.cells[1](h1)
        z, _ = self.mine(self.cells[2](h2)[None])
        return self.head(z[0] + h[0])


def test_convert_swaps_classes_and_keeps_parameters_and_results():
    torch.manual_seed(0)
    model = Tagger().double().eval()
    params = {n: p for n, p in model.named_parameters()}
    x = torch.randn(3, 4, 3, dtype=torch.float64)
    before = model(x)
    assert fastrnn.convert(model, backend="reference") is model
    assert type(model.lstm) is fastrnn.LSTM and type(model.rnn) is fastrnn.RNN and type(model.gru) is fastrnn.GRU
    assert [type(c) for c in model.cells] == [fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell]
    assert type(model.mine) is Tagger.MyLSTM  # a user's subclass may override forward: left alone
    assert model.lstm.backend == model.cells[1].backend == "reference"
    assert all(p is params[n] for n, p in model.named_parameters())
    assert not model.training and all(p.dtype == torch.float64 for p in model.parameters())
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-12)
    assert fastrnn.to_torch(model) is model
    assert type(model.lstm) is torch.nn.LSTM and type(model.gru) is torch.nn.GRU
    assert [type(c) for c in model.cells] == [torch.nn.RNNCell, torch.nn.LSTMCell, torch.nn.GRUCell]
    assert not hasattr(model.lstm, "backend")
    assert all(p is params[n] for n, p in model.named_parameters())
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-12)


def test_optimizer_built_before_convert_steps_the_same_tensors():
    torch.manual_seed(1)
    model = Tagger().double()
    twin = Tagger().double()
    twin.load_state_dict(model.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin)]
    fastrnn.convert(model)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    for m, opt in zip((model, twin), opts):
        opt.zero_grad()
        m(x).square().sum().backward()
        opt.step()
    assert model.training
    for (n, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=n)
    assert not torch.equal(model.lstm.weight_ih_l0, Tagger().double().lstm.weight_ih_l0)


def test_convert_the_module_itself_and_back():
    m = torch.nn.LSTM(3, 4, proj_size=2)
    assert fastrnn.convert(m, backend="auto") is m and type(m) is fastrnn.LSTM
    assert isinstance(m, torch.nn.RNNBase) and m.backend == "auto"
    fastrnn.to_torch(m)
    assert type(m) is torch.nn.LSTM


def test_convert_validates_backend_and_converted_modules_serialise():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastrnn.convert(torch.nn.RNN(3, 4), backend="cuda")
    import io
    m = fastrnn.convert(torch.nn.Sequential(torch.nn.GRU(3, 4), torch.nn.RNNCell(3, 4)), backend="reference")
    assert type(m[0]) is fastrnn.GRU and m[0].backend == "reference"
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded[1]) is fastrnn.RNNCell and loaded[1].backend == "reference"
    assert type(loaded[0]) is fastrnn.GRU and loaded[0].backend == "reference"
