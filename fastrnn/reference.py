"""The oracle: the Elman, LSTM and GRU recurrences in plain, differentiable PyTorch.

Readable first, fast never. Every function works in any dtype on any device (float64 included) and
is built from ordinary autograd ops, so gradcheck and gradgradcheck pass through it.

Shape letters (see the README's glossary): T time steps, B batch, I input size, H hidden size,
R recurrent size (= P, the projection size, when the LSTM projects; else H).

Elman:  h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),  act = tanh or relu
LSTM:   [i|f|g|o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh   (gate rows ordered i, f, g, o)
        i, f, o = sigmoid(.),  g = tanh(.)
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)              (with projection: h_t = (o * tanh(c_t)) W_hr^T)
GRU:    [r|z|n] rows of W_ih, W_hh, b_ih, b_hh     (gate rows ordered r, z, n)
        r = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr),  z likewise
        n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}
        b_hn sits inside the reset product, so unlike every other bias it cannot be folded into
        the input projection x W_ih^T + b_ih.

Variable lengths: sequence b has `lengths[b]` valid steps. Past its end its state stays as it was
and its output is zero. The forward direction walks t = 0 .. T-1; the reverse direction walks
t = T-1 .. 0, so each sequence starts from h0 at its own last valid step.
"""
import torch
import torch.nn.functional as F

__all__ = ["elman_cell", "lstm_cell", "gru_cell", "elman_layer", "lstm_layer", "gru_layer"]


def elman_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity="tanh"):
    """One Elman step. x: [B, I], h: [B, H] -> h': [B, H]."""
    pre = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)
    if nonlinearity == "tanh":
        return torch.tanh(pre)
    if nonlinearity == "relu":
        return torch.relu(pre)
    raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None):
    """One LSTM step. x: [B, I], h: [B, R], c: [B, H] -> (h': [B, R], c': [B, H])."""
    gates = F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)  # [B, 4H], i|f|g|o
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    if weight_hr is not None:
        h_new = F.linear(h_new, weight_hr, None)
    return h_new, c_new


def gru_cell(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step. x: [B, I], h: [B, H] -> h': [B, H]."""
    x_r, x_z, x_n = F.linear(x, weight_ih, bias_ih).chunk(3, dim=-1)  # [B, 3H], r|z|n
    h_r, h_z, h_n = F.linear(h, weight_hh, bias_hh).chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _scan(step, x, states, reverse, lengths):
    """Run `step(x_t, *states) -> new states` over x: [T, B, *] in one direction; the output at each
    step is the first state. Past a sequence's end (lengths: [B] or None) its states stay and its
    output is zero. Returns (out [T, B, *], *final states)."""
    outs = [None] * x.shape[0]
    for t in _steps(x.shape[0], reverse):
        new = step(x[t], *states)
        if lengths is None:
            states, outs[t] = new, new[0]
        else:
            active = (lengths.to(x.device) > t).unsqueeze(-1)  # [B, 1]: is step t inside each sequence?
            states = tuple(torch.where(active, n, s) for n, s in zip(new, states))
            outs[t] = torch.where(active, new[0], torch.zeros_like(new[0]))
    return (torch.stack(outs), *states)


def elman_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                nonlinearity="tanh", reverse=False, lengths=None):
    """One layer, one direction. x: [T, B, I], h0: [B, H], lengths: [B] or None
    -> (out: [T, B, H], h_n: [B, H])."""
    step = lambda x_t, h: (elman_cell(x_t, h, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity),)
    return _scan(step, x, (h0,), reverse, lengths)


def lstm_layer(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *,
               reverse=False, lengths=None):
    """One layer, one direction. x: [T, B, I], h0: [B, R], c0: [B, H], lengths: [B] or None
    -> (out: [T, B, R], h_n: [B, R], c_n: [B, H])."""
    step = lambda x_t, h, c: lstm_cell(x_t, h, c, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    return _scan(step, x, (h0, c0), reverse, lengths)


def gru_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, reverse=False, lengths=None):
    """One layer, one direction. x: [T, B, I], h0: [B, H], lengths: [B] or None
    -> (out: [T, B, H], h_n: [B, H])."""
    step = lambda x_t, h: (gru_cell(x_t, h, weight_ih, weight_hh, bias_ih, bias_hh),)
    return _scan(step, x, (h0,), reverse, lengths)
