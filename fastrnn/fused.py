"""The "triton" backend: the per-layer ops on the fused kernels.

Per layer and direction:
  forward   xg = x W_ih^T + (b_ih + b_hh)       one GEMM over all T*B rows (autograd does its backward)
            out, h_n, c_n = fused recurrence    one kernel launch, loops over time
  backward  dG, dh0, dc0 = fused backward       one kernel launch, loops backwards over time
            dW_hh = dG^T H_prev, dW_hr = dH^T M  GEMMs over all steps
The public functions take the reference's signature (fastrnn/reference.py) and its semantics.
The recurrences run as the torch.library custom ops of fastrnn/library.py (forward, backward and
their autograd formula live there), so torch.compile(fullgraph=True) and torch.export see one op
per layer and direction. `config` (launch overrides) is passed to the ops as a JSON string.
"""
import torch
import torch.nn.functional as F

from . import library
from .backends import BackendError, check_triton  # noqa: F401 (re-exported)

__all__ = ["elman_layer", "lstm_layer"]


def _autocast_weights(xg, *weights):
    """Under autocast the recurrence runs in autocast's dtype, like torch.nn's: F.linear already
    made xg [T, B, G*H] low precision, so the recurrent weights follow it (grads flow back to the
    fp32 parameters through the cast). Outside autocast, weights are used as they are."""
    if not torch.is_autocast_enabled(xg.device.type):
        return weights
    return tuple(None if w is None else w.to(xg.dtype) for w in weights)


def _input_projection(x, weight_ih, bias_ih, bias_hh):
    """xg = x W_ih^T + b_ih + b_hh: [T, B, I] -> [T, B, G*H], one GEMM over all steps."""
    if bias_ih is None and bias_hh is None:
        bias = None
    elif bias_hh is None or bias_ih is None:
        bias = bias_ih if bias_hh is None else bias_hh
    else:
        bias = bias_ih + bias_hh
    return F.linear(x, weight_ih, bias).contiguous()


def _lengths(lengths, x):
    return None if lengths is None else lengths.to(device=x.device, dtype=torch.int32)


def elman_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                nonlinearity="tanh", reverse=False, lengths=None, config=None):
    """One Elman layer and direction on the fused kernels. x: [T, B, I], h0: [B, H],
    lengths: [B] or None -> (out: [T, B, H], h_n: [B, H]). `config` overrides launch parameters."""
    check_triton(x)
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    xg = _input_projection(x, weight_ih, bias_ih, bias_hh)
    (weight_hh,) = _autocast_weights(xg, weight_hh)
    return library.elman(xg, h0, weight_hh, _lengths(lengths, x), reverse, nonlinearity == "relu", config)


def lstm_layer(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *,
               reverse=False, lengths=None, config=None):
    """One LSTM layer and direction on the fused kernels. x: [T, B, I], h0: [B, R], c0: [B, H],
    lengths: [B] or None -> (out: [T, B, R], h_n: [B, R], c_n: [B, H])."""
    check_triton(x)
    xg = _input_projection(x, weight_ih, bias_ih, bias_hh)
    params = (xg, h0, c0, weight_hh, weight_hr)
    save = torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in params)
    weight_hh, weight_hr = _autocast_weights(xg, weight_hh, weight_hr)
    return library.lstm(xg, h0, c0, weight_hh, weight_hr, _lengths(lengths, x), reverse, save, config)
