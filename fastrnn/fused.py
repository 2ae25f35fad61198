"""The "triton" backend: autograd Functions around the fused kernels, and the per-layer ops.

Per layer and direction:
  forward   xg = x W_ih^T + (b_ih + b_hh)       one GEMM over all T*B rows (autograd does its backward)
            out, h_n, c_n = fused recurrence    one kernel launch, loops over time
  backward  dG, dh0, dc0 = fused backward       one kernel launch, loops backwards over time
            dW_hh = dG^T H_prev, dW_hr = dH^T M  GEMMs over all steps
The public functions take the reference's signature (fastrnn/reference.py) and its semantics.
"""
import torch
import torch.nn.functional as F

from .backends import BackendError, check_triton  # noqa: F401 (re-exported)
from .kernels.elman import elman_bwd, elman_fwd
from .kernels.lstm import lstm_bwd, lstm_fwd

__all__ = ["elman_layer", "lstm_layer"]


def _unit_stride(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _previous_h(out, h0, lengths, reverse):
    """H_prev [T, B, R]: the state each step multiplied by W_hh (only read where the step is active)."""
    h0 = h0.to(out.dtype)[None]
    if not reverse:
        return torch.cat([h0, out[:-1]])
    prev = torch.cat([out[1:], h0])
    if lengths is None:
        return prev
    # the reverse walk starts each sequence at its own last step, from h0
    t = torch.arange(out.shape[0], device=out.device)[:, None, None]
    return torch.where(t + 1 < lengths.to(out.device).long()[None, :, None], prev, h0)


def _weight_grad(dg, x):
    """sum over t, b of dg[t, b, :]^T x[t, b, :] -> [N, K], in fp32."""
    return dg.reshape(-1, dg.shape[-1]).t() @ x.reshape(-1, x.shape[-1]).float()


def _no_double_backward():
    # backward runs with grad mode on only under create_graph=True: a second derivative is wanted
    if torch.is_grad_enabled():
        raise RuntimeError("fastrnn's triton backend has no double backward (its backward is a fused "
                           "kernel); use backend='reference' for higher-order gradients")


def _zeros_if_none(g, shape, like):
    return torch.zeros(shape, device=like.device, dtype=like.dtype) if g is None else g


class ElmanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xg, h0, w_hh, lengths, reverse, relu, config):
        T, B, H = xg.shape
        out = torch.empty((T, B, H), device=xg.device, dtype=xg.dtype)
        h_n = elman_fwd(xg, w_hh, h0, lengths, out, reverse=reverse, relu=relu, config=config)
        ctx.save_for_backward(h0, w_hh, lengths, out)
        ctx.opts = dict(reverse=reverse, relu=relu, config=config)
        return out, h_n.to(xg.dtype)

    @staticmethod
    def backward(ctx, dout, dh_n):
        _no_double_backward()
        h0, w_hh, lengths, out = ctx.saved_tensors
        dout = _unit_stride(_zeros_if_none(dout, out.shape, out))
        dh_n = _zeros_if_none(dh_n, h0.shape, h0)
        dg, dh0 = elman_bwd(dout, dh_n, out, w_hh, lengths, **ctx.opts)
        dw_hh = _weight_grad(dg, _previous_h(out, h0, lengths, ctx.opts["reverse"]))
        return dg.to(out.dtype), dh0.to(h0.dtype), dw_hh.to(w_hh.dtype), None, None, None, None


class LSTMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xg, h0, c0, w_hh, w_hr, lengths, reverse, save, config):
        T, B, _ = xg.shape
        R = w_hh.shape[1]
        out = torch.empty((T, B, R), device=xg.device, dtype=xg.dtype)
        h_n, c_n, saved = lstm_fwd(xg, w_hh, w_hr, h0, c0, lengths, out, reverse=reverse, save=save,
                                   config=config)
        if save:
            ctx.save_for_backward(h0, c0, w_hh, w_hr, lengths, out, *saved)
        ctx.opts = dict(reverse=reverse, config=config)
        return out, h_n.to(xg.dtype), c_n.to(xg.dtype)

    @staticmethod
    def backward(ctx, dout, dh_n, dc_n):
        _no_double_backward()
        h0, c0, w_hh, w_hr, lengths, out, gates, cs, m = ctx.saved_tensors
        dout = _unit_stride(_zeros_if_none(dout, out.shape, out))
        dh_n = _zeros_if_none(dh_n, h0.shape, h0)
        dc_n = _zeros_if_none(dc_n, c0.shape, c0)
        dg, dh0, dc0, dhs = lstm_bwd(dout, dh_n, dc_n, w_hh, w_hr, c0, lengths, (gates, cs, m), **ctx.opts)
        dw_hh = _weight_grad(dg, _previous_h(out, h0, lengths, ctx.opts["reverse"]))
        dw_hr = None if w_hr is None else _weight_grad(dhs, m).to(w_hr.dtype)
        return (dg.to(out.dtype), dh0.to(h0.dtype), dc0.to(c0.dtype), dw_hh.to(w_hh.dtype), dw_hr,
                None, None, None, None)


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
    return ElmanFunction.apply(xg, h0.contiguous(), weight_hh.contiguous(), _lengths(lengths, x),
                               reverse, nonlinearity == "relu", config)


def lstm_layer(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *,
               reverse=False, lengths=None, config=None):
    """One LSTM layer and direction on the fused kernels. x: [T, B, I], h0: [B, R], c0: [B, H],
    lengths: [B] or None -> (out: [T, B, R], h_n: [B, R], c_n: [B, H])."""
    check_triton(x)
    xg = _input_projection(x, weight_ih, bias_ih, bias_hh)
    params = (xg, h0, c0, weight_hh, weight_hr)
    save = torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in params)
    return LSTMFunction.apply(xg, h0.contiguous(), c0.contiguous(), weight_hh.contiguous(),
                              None if weight_hr is None else weight_hr.contiguous(),
                              _lengths(lengths, x), reverse, save, config)
