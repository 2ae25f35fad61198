"""The oracle: the Elman and LSTM recurrences in plain, differentiable PyTorch.

Readable first, fast never. Every function works in any dtype on any device (float64 included) and
is built from ordinary autograd ops, so gradcheck and gradgradcheck pass through it.

Shape letters (see the README's glossary): T time steps, B batch, I input size, H hidden size,
R recurrent size (= P, the projection size, when the LSTM projects; else H).

Elman:  h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),  act = tanh or relu
LSTM:   [i|f|g|o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh   (gate rows ordered i, f, g, o)
        i, f, o = sigmoid(.),  g = tanh(.)
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)              (with projection: h_t = (o * tanh(c_t)) W_hr^T)

Variable lengths: sequence b has `lengths[b]` valid steps. Past its end its state stays as it was
and its output is zero. The forward direction walks t = 0 .. T-1; the reverse direction walks
t = T-1 .. 0, so each sequence starts from h0 at its own last valid step.
"""
import torch
import torch.nn.functional as F

__all__ = ["elman_cell", "lstm_cell", "elman_layer", "lstm_layer"]


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


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _active(lengths, t, like):
    """[B, 1] bool: is step t inside each sequence? None when every sequence is T long."""
    if lengths is None:
        return None
    return (lengths.to(like.device) > t).unsqueeze(-1)


def elman_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                nonlinearity="tanh", reverse=False, lengths=None):
    """One layer, one direction. x: [T, B, I], h0: [B, H], lengths: [B] or None
    -> (out: [T, B, H], h_n: [B, H])."""
    h, outs = h0, [None] * x.shape[0]
    for t in _steps(x.shape[0], reverse):
        h_new = elman_cell(x[t], h, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity)
        active = _active(lengths, t, x)
        if active is None:
            h, outs[t] = h_new, h_new
        else:
            h = torch.where(active, h_new, h)
            outs[t] = torch.where(active, h_new, torch.zeros_like(h_new))
    return torch.stack(outs), h


def lstm_layer(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *,
               reverse=False, lengths=None):
    """One layer, one direction. x: [T, B, I], h0: [B, R], c0: [B, H], lengths: [B] or None
    -> (out: [T, B, R], h_n: [B, R], c_n: [B, H])."""
    h, c, outs = h0, c0, [None] * x.shape[0]
    for t in _steps(x.shape[0], reverse):
        h_new, c_new = lstm_cell(x[t], h, c, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
        active = _active(lengths, t, x)
        if active is None:
            h, c, outs[t] = h_new, c_new, h_new
        else:
            h = torch.where(active, h_new, h)
            c = torch.where(active, c_new, c)
            outs[t] = torch.where(active, h_new, torch.zeros_like(h_new))
    return torch.stack(outs), h, c
