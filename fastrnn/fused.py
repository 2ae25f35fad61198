"""The "triton" backend: the per-layer ops on the fused kernels.

Per layer (one or both directions):
  forward   xg = x W_ih^T + (b_ih + b_hh)       one GEMM over all T*B rows, both directions' weights
                                                stacked (autograd does its backward)
            out, h_n, c_n = fused recurrence    one kernel launch, loops over time; the directions
                                                run side by side and write their halves of `out`
  backward  dG, dh0, dc0 = fused backward       one kernel launch, loops backwards over time
            dW_hh = dG^T H_prev, dW_hr = dH^T M  GEMMs over all steps, per direction
`elman_directions` / `lstm_directions` run all directions of a layer (one or two) in one launch;
`elman_layer` / `lstm_layer` are their one-direction form with the reference's signature
(fastrnn/reference.py) and semantics. The recurrences run as the torch.library custom ops of
fastrnn/library.py (forward, backward and their autograd formula live there), so
torch.compile(fullgraph=True) and torch.export see one op per layer. `config` (launch overrides)
is passed to the ops as a JSON string.
"""
import torch
import torch.nn.functional as F

from . import library
from .backends import BackendError, check_triton

__all__ = ["elman_layer", "lstm_layer", "gru_layer", "elman_directions", "lstm_directions", "gru_directions"]


def _input_projection(x, directions):
    """xg = x W_ih^T + b_ih + b_hh for each direction's (weight_ih, bias_ih, bias_hh), as one GEMM
    over all steps: [T, B, I] -> one [T, B, G*H] view per direction (halves of one buffer)."""
    weight = torch.cat([w for w, _, _ in directions]) if len(directions) > 1 else directions[0][0]
    biases = [_bias_sum(b_ih, b_hh) for _, b_ih, b_hh in directions]
    if all(b is None for b in biases):
        bias = None
    else:
        bias = torch.cat([torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if b is None else b
                          for (w, _, _), b in zip(directions, biases)])
    xg = F.linear(x, weight, bias)
    return xg.chunk(len(directions), dim=-1)


def _bias_sum(bias_ih, bias_hh):
    if bias_ih is None or bias_hh is None:
        return bias_hh if bias_ih is None else bias_ih
    return bias_ih + bias_hh


def _lengths(lengths, x):
    return None if lengths is None else lengths.to(device=x.device, dtype=torch.int32)


def _check_nonlinearity(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def _check_states(x, *states):
    """The kernels keep the states in the input's dtype; torch (and the reference) would promote a
    state of another dtype, e.g. an LSTMCell's float64 c with float32 h, and return that dtype."""
    for s in states:
        if s.dtype != x.dtype:
            raise BackendError(f"backend='triton' needs the hidden states in the input's dtype ({x.dtype}), "
                               f"got {s.dtype}; use backend='reference', which promotes them as torch does")


def _check_weights(x, weights):
    """The kernels multiply in the weights' dtype and keep h in it: weights of another dtype than
    the input would silently round the state (torch's matmul raises on mixed dtypes instead)."""
    for w in (w for ws in weights for w in ws if w is not None):
        if w.dtype != x.dtype:
            raise BackendError(f"backend='triton' needs the weights in the input's dtype ({x.dtype}), got "
                               f"{w.dtype}; cast them (the modules do) or run under autocast")


def _needs_save(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def elman_directions(x, h0, weights, *, nonlinearity="tanh", reverse=False, lengths=None, config=None):
    """The D = len(weights) directions of an Elman layer in one launch. x: [T, B, I], h0: [D, B, H],
    weights: the (w_ih, w_hh, b_ih, b_hh) tuple of each direction (forward first); `reverse` makes a
    lone direction walk backwards -> (out [T, B, D*H] as torch concatenates it, h_n [D, B, H])."""
    check_triton(x)
    _check_nonlinearity(nonlinearity)
    _check_states(x, h0)
    _check_weights(x, weights)
    xg = _input_projection(x, [(w_ih, b_ih, b_hh) for w_ih, _, b_ih, b_hh in weights])
    w_hh = [w[1] for w in weights]
    return library.elman(xg, h0, w_hh, _lengths(lengths, x), reverse, nonlinearity == "relu", config)


def elman_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                nonlinearity="tanh", reverse=False, lengths=None, config=None):
    """One Elman layer and direction on the fused kernels. x: [T, B, I], h0: [B, H],
    lengths: [B] or None -> (out: [T, B, H], h_n: [B, H]). `config` overrides launch parameters."""
    out, h_n = elman_directions(x, h0[None], [(weight_ih, weight_hh, bias_ih, bias_hh)],
                                nonlinearity=nonlinearity, reverse=reverse, lengths=lengths, config=config)
    return out, h_n[0]


def lstm_directions(x, h0, c0, weights, *, reverse=False, lengths=None, config=None):
    """The D = len(weights) directions of an LSTM layer in one launch. x: [T, B, I], h0: [D, B, R],
    c0: [D, B, H], weights: the (w_ih, w_hh, b_ih, b_hh, w_hr) tuple of each direction (forward
    first); `reverse` makes a lone direction walk backwards
    -> (out [T, B, D*R] as torch concatenates it, h_n [D, B, R], c_n [D, B, H])."""
    check_triton(x)
    _check_states(x, h0, c0)
    _check_weights(x, weights)
    xg = _input_projection(x, [(w_ih, b_ih, b_hh) for w_ih, _, b_ih, b_hh, _ in weights])
    w_hh = [w[1] for w in weights]
    w_hr = None if weights[0][4] is None else [w[4] for w in weights]
    save = _needs_save(*xg, h0, c0, *w_hh, *(w_hr or ()))
    return library.lstm(xg, h0, c0, w_hh, w_hr, _lengths(lengths, x), reverse, save, config)


def lstm_layer(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *,
               reverse=False, lengths=None, config=None):
    """One LSTM layer and direction on the fused kernels. x: [T, B, I], h0: [B, R], c0: [B, H],
    lengths: [B] or None -> (out: [T, B, R], h_n: [B, R], c_n: [B, H])."""
    out, h_n, c_n = lstm_directions(x, h0[None], c0[None], [(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)],
                                    reverse=reverse, lengths=lengths, config=config)
    return out, h_n[0], c_n[0]


def gru_directions(x, h0, weights, *, reverse=False, lengths=None, config=None):
    """The D = len(weights) directions of a GRU layer in one launch. x: [T, B, I], h0: [D, B, H],
    weights: the (w_ih, w_hh, b_ih, b_hh) tuple of each direction (forward first); `reverse` makes a
    lone direction walk backwards -> (out [T, B, D*H], h_n [D, B, H]). b_hh's r and z parts fold
    into the input GEMM; its n part b_hn sits inside the reset product, so the kernel adds it."""
    check_triton(x)
    _check_states(x, h0)
    _check_weights(x, weights)
    H = weights[0][1].shape[1]
    zeros = x.new_zeros(H, dtype=weights[0][1].dtype)
    folded = [None if b_hh is None else torch.cat([b_hh[:2 * H], zeros]) for _, _, _, b_hh in weights]
    xg = _input_projection(x, [(w_ih, b_ih, b) for (w_ih, _, b_ih, _), b in zip(weights, folded)])
    w_hh = [w[1] for w in weights]
    b_hn = [zeros if b_hh is None else b_hh[2 * H:] for _, _, _, b_hh in weights]
    save = _needs_save(*xg, h0, *w_hh, *b_hn)
    return library.gru(xg, h0, w_hh, b_hn, _lengths(lengths, x), reverse, save, config)


def gru_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, reverse=False, lengths=None,
              config=None):
    """One GRU layer and direction on the fused kernels. x: [T, B, I], h0: [B, H], lengths: [B] or
    None -> (out: [T, B, H], h_n: [B, H])."""
    out, h_n = gru_directions(x, h0[None], [(weight_ih, weight_hh, bias_ih, bias_hh)], reverse=reverse,
                              lengths=lengths, config=config)
    return out, h_n[0]
