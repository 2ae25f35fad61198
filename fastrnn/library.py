"""The fused kernels as `torch.library` custom ops, so torch.compile and torch.export see one op.

Six ops, each a pure function (no input is mutated, no output aliases an input), each running
one layer in D = 1 or 2 directions (one launch; `*_rev` arguments are None for D = 1):

  fastrnn::elman_fwd(xg, xg_rev, h0, w_hh, w_hh_rev, lengths, reverse, relu, config) -> (out, h_n)
  fastrnn::elman_bwd(dout, dh_n, out, w_hh, w_hh_rev, lengths, reverse, relu, config) -> (dG, dh0)
  fastrnn::lstm_fwd(xg, xg_rev, h0, c0, w_hh, w_hh_rev, w_hr, w_hr_rev, lengths, reverse, save,
                    config) -> (out, h_n, c_n, gates, cs, m)
  fastrnn::lstm_bwd(dout, dh_n, dc_n, w_hh, w_hh_rev, w_hr, w_hr_rev, c0, lengths, gates, cs,
                    reverse, config) -> (dG, dh0, dc0, dH)
  fastrnn::gru_fwd(xg, xg_rev, h0, w_hh, w_hh_rev, b_hn, b_hn_rev, lengths, reverse, save, config)
                   -> (out, h_n, saved)
  fastrnn::gru_bwd(dout, dh_n, w_hh, w_hh_rev, lengths, saved, reverse, config) -> (dG, dh0, dA_n)

Shapes: xg, xg_rev [T, B, G*H] (G = 1 Elman, 4 LSTM (i|f|g|o), 3 GRU (r|z|n; b_hn, inside the reset
product, is not in xg but its own [H] input); unit last stride, e.g. the two
halves of one GEMM's output), h0 [D, B, R], c0 [D, B, H], w_hh [G*H, R], w_hr [R, H] or None,
lengths [B] int32 or None, out [T, B, D*R] (forward direction first, as torch concatenates).
`reverse` makes a one-direction op walk backwards in time. The LSTM forward returns the
activations its backward needs as extra fp32 outputs (gates [D, T, B, 4H], cs [D, T, B, H],
m [D, T, B, H] with a projection); when `save` is False or there is no projection they are empty
[0] tensors, because a custom op cannot return None; the GRU's saved is r, z, n, W_hn h + b_hn and
h_{t-1} ([D, T, B, 5H] fp32). dG [D, T, B, G*H], dh0, dc0, dH, dA_n (the GRU's gradient of
W_hn h + b_hn, which differs from its n gate's dG) come back in
fp32; the autograd formula (registered below) does the weight-gradient GEMMs with ordinary torch
ops and casts, so a compiled backward graph holds one opaque op per layer plus GEMMs Inductor can
see.

`config` (launch overrides, a dict used by tests and tuning) travels as a JSON string: a schema
cannot hold a dict, and a string is a constant to Dynamo, so every call, eager or compiled, goes
through the same ops. Each op has a fake (meta) implementation giving output shapes and dtypes.
Eager calls reach the forward ops through an autograd.Function with the same formula, so that
torch.func's transforms work and forward-mode AD raises (fastrnn/transforms.py).
"""
import json
from typing import Optional

import torch
from torch import Tensor

from .kernels import recurrence
from .transforms import call, first_order, transformable

__all__ = ["elman", "lstm", "gru", "encode_config"]


def encode_config(config):
    """dict of launch overrides (or None) -> the op's `config` string (or None). While torch.compile
    traces (json.dumps does not trace; auto passes {"STRATEGY": ...} there), a flat dict of bool,
    int and plain-word str values is written by hand, as json.dumps(sort_keys=True) writes it."""
    if config is None:
        return None
    if not torch.compiler.is_compiling():
        return json.dumps(config, sort_keys=True)
    return "{" + ", ".join(f'"{k}": {_json_scalar(k, config[k])}' for k in sorted(config)) + "}"


def _json_scalar(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.isidentifier():
        return f'"{value}"'
    raise TypeError(f"launch config {key}={value!r}: under torch.compile only bool, int and plain-word str "
                    "values can be passed")


def _decode(config):
    return None if config is None else json.loads(config)


def _none_if_empty(t):
    return None if t.numel() == 0 else t


def _f32(like, *shape):
    return like.new_empty(shape, dtype=torch.float32)


def _zeros_if_none(g, like):
    return torch.zeros_like(like) if g is None else g


def _dirs(a, b):
    """The per-direction tuple of an op's (forward, reverse) tensor pair, contiguous, as the
    launchers take it; b is None for D = 1."""
    return (a.contiguous(),) if b is None else (a.contiguous(), b.contiguous())


def _second(per_direction):
    """The reverse direction's entry of a per-direction sequence, None for D = 1 (its inverse)."""
    return per_direction[1] if len(per_direction) == 2 else None


def _xg_pair(xg, xg_rev):
    """Both directions' input projections with unit last stride and equal strides (no copy for
    the two halves of one GEMM's output)."""
    if xg_rev is None:
        return (xg if xg.stride(-1) == 1 else xg.contiguous(),)
    if xg.stride(-1) == 1 and xg.stride() == xg_rev.stride():
        return xg, xg_rev
    return xg.contiguous(), xg_rev.contiguous()


def _is_reversed(reverse, d):
    """Does direction d of an op walk backwards? d = 1 does; `reverse` flips (as in the kernels)."""
    return (d == 1) != reverse


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


def _recurrent_weight_grads(dg, out, h0, lengths, reverse, weights):
    """dW_hh of each direction d: dG[d]^T H_prev[d], H_prev read from direction d's columns of out."""
    R = h0.shape[-1]
    return [_weight_grad(dg[d], _previous_h(out[..., d * R:(d + 1) * R], h0[d], lengths,
                                            _is_reversed(reverse, d))).to(w.dtype)
            for d, w in enumerate(weights)]


def _weight_grad(dg, x):
    """sum over t, b of dg[t, b, :]^T x[t, b, :] -> [N, K], in fp32."""
    return dg.reshape(-1, dg.shape[-1]).t() @ x.reshape(-1, x.shape[-1]).float()


# --- Elman ---------------------------------------------------------------------------------------
@torch.library.custom_op("fastrnn::elman_fwd", mutates_args=())
def elman_fwd_op(xg: Tensor, xg_rev: Optional[Tensor], h0: Tensor, w_hh: Tensor,
                 w_hh_rev: Optional[Tensor], lengths: Optional[Tensor], reverse: bool, relu: bool,
                 config: Optional[str]) -> tuple[Tensor, Tensor]:
    xgs = _xg_pair(xg, xg_rev)
    T, B, H = xg.shape
    out = torch.empty((T, B, len(xgs) * H), device=xg.device, dtype=xg.dtype)
    h_n, _, _ = recurrence.forward("elman", xgs, _dirs(w_hh, w_hh_rev), h0.contiguous(), lengths, out,
                                   reverse=reverse, relu=relu, config=_decode(config))
    return out, h_n.to(xg.dtype, copy=True)  # a copy: h_n is a view of the launcher's buffer


@elman_fwd_op.register_fake
def _(xg, xg_rev, h0, w_hh, w_hh_rev, lengths, reverse, relu, config):
    T, B, H = xg.shape
    return xg.new_empty((T, B, h0.shape[0] * H)), xg.new_empty(h0.shape)


@torch.library.custom_op("fastrnn::elman_bwd", mutates_args=())
def elman_bwd_op(dout: Tensor, dh_n: Tensor, out: Tensor, w_hh: Tensor, w_hh_rev: Optional[Tensor],
                 lengths: Optional[Tensor], reverse: bool, relu: bool, config: Optional[str]
                 ) -> tuple[Tensor, Tensor]:
    dg, dh0, _, _, _ = recurrence.backward("elman", dout.contiguous(), dh_n.contiguous(), out.contiguous(),
                                        _dirs(w_hh, w_hh_rev), lengths, None, reverse=reverse, relu=relu,
                                        config=_decode(config))
    return dg, dh0.clone()


@elman_bwd_op.register_fake
def _(dout, dh_n, out, w_hh, w_hh_rev, lengths, reverse, relu, config):
    D, B, H = dh_n.shape
    return _f32(out, D, out.shape[0], B, H), _f32(out, *dh_n.shape)


def _elman_setup(ctx, inputs, output):
    xg, xg_rev, h0, w_hh, w_hh_rev, lengths, reverse, relu, config = inputs
    ctx.save_for_backward(h0, w_hh, w_hh_rev, lengths, output[0])
    ctx.opts = dict(reverse=reverse, relu=relu, config=config)


@first_order("triton")
def _elman_backward(ctx, dout, dh_n):
    h0, w_hh, w_hh_rev, lengths, out = ctx.saved_tensors
    dg, dh0 = elman_bwd_op(_zeros_if_none(dout, out), _zeros_if_none(dh_n, h0), out, w_hh, w_hh_rev,
                           lengths, **ctx.opts)
    dw_hh = _recurrent_weight_grads(dg, out, h0, lengths, ctx.opts["reverse"], _dirs(w_hh, w_hh_rev))
    dxg = [g.to(out.dtype) for g in dg]
    return (dxg[0], _second(dxg), dh0.to(h0.dtype), dw_hh[0], _second(dw_hh), None, None, None, None)


elman_fwd_op.register_autograd(_elman_backward, setup_context=_elman_setup)


# --- LSTM ---------------------------------------------------------------------------------------
@torch.library.custom_op("fastrnn::lstm_fwd", mutates_args=())
def lstm_fwd_op(xg: Tensor, xg_rev: Optional[Tensor], h0: Tensor, c0: Tensor, w_hh: Tensor,
                w_hh_rev: Optional[Tensor], w_hr: Optional[Tensor], w_hr_rev: Optional[Tensor],
                lengths: Optional[Tensor], reverse: bool, save: bool, config: Optional[str]
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    xgs = _xg_pair(xg, xg_rev)
    T, B, _ = xg.shape
    out = torch.empty((T, B, len(xgs) * w_hh.shape[1]), device=xg.device, dtype=xg.dtype)
    w_hrs = None if w_hr is None else _dirs(w_hr, w_hr_rev)
    h_n, c_n, saved = recurrence.forward("lstm", xgs, _dirs(w_hh, w_hh_rev), h0.contiguous(), lengths, out,
                                         c0=c0.contiguous(), w_hr=w_hrs, reverse=reverse, save=save,
                                         config=_decode(config))
    gates, cs, m = saved if save else (_f32(xg, 0), _f32(xg, 0), None)
    # copies: h_n/c_n are views of the launcher's buffers, and empty outputs must not alias
    return (out, h_n.to(xg.dtype, copy=True), c_n.to(xg.dtype, copy=True), gates, cs,
            _f32(xg, 0) if m is None else m)


@lstm_fwd_op.register_fake
def _(xg, xg_rev, h0, c0, w_hh, w_hh_rev, w_hr, w_hr_rev, lengths, reverse, save, config):
    T, B, G = xg.shape
    D, H, R = h0.shape[0], G // 4, w_hh.shape[1]
    saved = (_f32(xg, D, T, B, G), _f32(xg, D, T, B, H)) if save else (_f32(xg, 0), _f32(xg, 0))
    m = _f32(xg, D, T, B, H) if (save and w_hr is not None) else _f32(xg, 0)
    return (xg.new_empty((T, B, D * R)), xg.new_empty(h0.shape), xg.new_empty(c0.shape)) + saved + (m,)


@torch.library.custom_op("fastrnn::lstm_bwd", mutates_args=())
def lstm_bwd_op(dout: Tensor, dh_n: Tensor, dc_n: Tensor, w_hh: Tensor, w_hh_rev: Optional[Tensor],
                w_hr: Optional[Tensor], w_hr_rev: Optional[Tensor], c0: Tensor,
                lengths: Optional[Tensor], gates: Tensor, cs: Tensor, reverse: bool,
                config: Optional[str]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w_hrs = None if w_hr is None else _dirs(w_hr, w_hr_rev)
    dg, dh0, dc0, dhs, _ = recurrence.backward("lstm", dout.contiguous(), dh_n.contiguous(), None,
                                            _dirs(w_hh, w_hh_rev), lengths, (gates, cs, None),
                                            dc_n=dc_n.contiguous(), c0=c0, w_hr=w_hrs, reverse=reverse,
                                            config=_decode(config))
    return dg, dh0.clone(), dc0.clone(), _f32(dg, 0) if dhs is None else dhs


@lstm_bwd_op.register_fake
def _(dout, dh_n, dc_n, w_hh, w_hh_rev, w_hr, w_hr_rev, c0, lengths, gates, cs, reverse, config):
    D, T, B, _ = gates.shape
    dhs = _f32(gates, D, T, B, dh_n.shape[-1]) if w_hr is not None else _f32(gates, 0)
    return _f32(gates, *gates.shape), _f32(gates, *dh_n.shape), _f32(gates, *dc_n.shape), dhs


def _lstm_setup(ctx, inputs, output):
    xg, xg_rev, h0, c0, w_hh, w_hh_rev, w_hr, w_hr_rev, lengths, reverse, save, config = inputs
    out, _, _, gates, cs, m = output
    if save:
        ctx.save_for_backward(h0, c0, w_hh, w_hh_rev, w_hr, w_hr_rev, lengths, out, gates, cs, m)
    ctx.opts = dict(reverse=reverse, config=config)


@first_order("triton")
def _lstm_backward(ctx, dout, dh_n, dc_n, *_saved_grads):
    h0, c0, w_hh, w_hh_rev, w_hr, w_hr_rev, lengths, out, gates, cs, m = ctx.saved_tensors
    dg, dh0, dc0, dhs = lstm_bwd_op(_zeros_if_none(dout, out), _zeros_if_none(dh_n, h0),
                                    _zeros_if_none(dc_n, c0), w_hh, w_hh_rev, w_hr, w_hr_rev, c0,
                                    lengths, gates, cs, **ctx.opts)
    dw_hh = _recurrent_weight_grads(dg, out, h0, lengths, ctx.opts["reverse"], _dirs(w_hh, w_hh_rev))
    dw_hr = [None] * len(dg) if w_hr is None else [_weight_grad(dhs[d], m[d]).to(w.dtype)
                                                   for d, w in enumerate(_dirs(w_hr, w_hr_rev))]
    dxg = [g.to(out.dtype) for g in dg]
    return (dxg[0], _second(dxg), dh0.to(h0.dtype), dc0.to(c0.dtype), dw_hh[0], _second(dw_hh),
            dw_hr[0], _second(dw_hr), None, None, None, None)


lstm_fwd_op.register_autograd(_lstm_backward, setup_context=_lstm_setup)


# --- GRU ----------------------------------------------------------------------------------------
@torch.library.custom_op("fastrnn::gru_fwd", mutates_args=())
def gru_fwd_op(xg: Tensor, xg_rev: Optional[Tensor], h0: Tensor, w_hh: Tensor, w_hh_rev: Optional[Tensor],
               b_hn: Tensor, b_hn_rev: Optional[Tensor], lengths: Optional[Tensor], reverse: bool, save: bool,
               config: Optional[str]) -> tuple[Tensor, Tensor, Tensor]:
    xgs = _xg_pair(xg, xg_rev)
    T, B, G = xg.shape
    out = torch.empty((T, B, len(xgs) * (G // 3)), device=xg.device, dtype=xg.dtype)
    h_n, _, saved = recurrence.forward("gru", xgs, _dirs(w_hh, w_hh_rev), h0.contiguous(), lengths, out,
                                       rec_bias=_dirs(b_hn, b_hn_rev), reverse=reverse, save=save,
                                       config=_decode(config))
    return out, h_n.to(xg.dtype, copy=True), saved[0] if save else _f32(xg, 0)


@gru_fwd_op.register_fake
def _(xg, xg_rev, h0, w_hh, w_hh_rev, b_hn, b_hn_rev, lengths, reverse, save, config):
    T, B, G = xg.shape
    D, H = h0.shape[0], G // 3
    values = _f32(xg, D, T, B, 5 * H) if save else _f32(xg, 0)
    return xg.new_empty((T, B, D * H)), xg.new_empty(h0.shape), values


@torch.library.custom_op("fastrnn::gru_bwd", mutates_args=())
def gru_bwd_op(dout: Tensor, dh_n: Tensor, w_hh: Tensor, w_hh_rev: Optional[Tensor],
               lengths: Optional[Tensor], values: Tensor, reverse: bool, config: Optional[str]
               ) -> tuple[Tensor, Tensor, Tensor]:
    dg, dh0, _, _, da = recurrence.backward("gru", dout.contiguous(), dh_n.contiguous(), None,
                                            _dirs(w_hh, w_hh_rev), lengths, (values,), reverse=reverse,
                                            config=_decode(config))
    return dg, dh0.clone(), da


@gru_bwd_op.register_fake
def _(dout, dh_n, w_hh, w_hh_rev, lengths, values, reverse, config):
    D, T, B, _ = values.shape
    H = dh_n.shape[-1]
    return _f32(values, D, T, B, 3 * H), _f32(values, *dh_n.shape), _f32(values, D, T, B, H)


def _gru_setup(ctx, inputs, output):
    xg, xg_rev, h0, w_hh, w_hh_rev, b_hn, b_hn_rev, lengths, reverse, save, config = inputs
    if save:
        ctx.save_for_backward(h0, w_hh, w_hh_rev, b_hn, b_hn_rev, lengths, output[0], output[2])
    ctx.opts = dict(reverse=reverse, config=config)


@first_order("triton")
def _gru_backward(ctx, dout, dh_n, _values_grad):
    h0, w_hh, w_hh_rev, b_hn, b_hn_rev, lengths, out, values = ctx.saved_tensors
    dg, dh0, da = gru_bwd_op(_zeros_if_none(dout, out), _zeros_if_none(dh_n, h0), w_hh, w_hh_rev, lengths,
                             values, **ctx.opts)
    H = h0.shape[-1]
    # the recurrent parts' gradient: r and z as their dG, n its own (r * dn, inside the reset product)
    d_rec = torch.cat([dg[..., :2 * H], da], dim=-1)
    dw_hh = _recurrent_weight_grads(d_rec, out, h0, lengths, ctx.opts["reverse"], _dirs(w_hh, w_hh_rev))
    db_hn = [da[d].sum((0, 1)).to(b.dtype) for d, b in enumerate(_dirs(b_hn, b_hn_rev))]
    dxg = [g.to(out.dtype) for g in dg]
    return (dxg[0], _second(dxg), dh0.to(h0.dtype), dw_hh[0], _second(dw_hh), db_hn[0], _second(db_hn),
            None, None, None, None)


gru_fwd_op.register_autograd(_gru_backward, setup_context=_gru_setup)


# --- the calls fastrnn.fused makes --------------------------------------------------------------
_ELMAN = transformable(elman_fwd_op, _elman_setup, _elman_backward, "triton")
_LSTM = transformable(lstm_fwd_op, _lstm_setup, _lstm_backward, "triton")
_GRU = transformable(gru_fwd_op, _gru_setup, _gru_backward, "triton")


def elman(xg, h0, w_hh, lengths, reverse, relu, config):
    """xg: D tensors [T, B, H], h0: [D, B, H], w_hh: D tensors [H, H], lengths: [B] int32 or None
    -> (out [T, B, D*H], h_n [D, B, H])."""
    return call(_ELMAN, elman_fwd_op, xg[0], _second(xg), h0, w_hh[0], _second(w_hh), lengths, reverse,
                  relu, encode_config(config))


def lstm(xg, h0, c0, w_hh, w_hr, lengths, reverse, save, config):
    """xg: D tensors [T, B, 4H], h0: [D, B, R], c0: [D, B, H], w_hh: D tensors [4H, R], w_hr: D
    tensors [R, H] or None -> (out [T, B, D*R], h_n [D, B, R], c_n [D, B, H])."""
    w_hr = (None, None) if w_hr is None else (w_hr[0], _second(w_hr))
    out, h_n, c_n, *_ = call(_LSTM, lstm_fwd_op, xg[0], _second(xg), h0, c0, w_hh[0], _second(w_hh), *w_hr,
                               lengths, reverse, save, encode_config(config))
    return out, h_n, c_n


def gru(xg, h0, w_hh, b_hn, lengths, reverse, save, config):
    """xg: D tensors [T, B, 3H] (b_hn not in them), h0: [D, B, H], w_hh: D tensors [3H, H], b_hn: D
    tensors [H] -> (out [T, B, D*H], h_n [D, B, H])."""
    out, h_n, _ = call(_GRU, gru_fwd_op, xg[0], _second(xg), h0, w_hh[0], _second(w_hh), b_hn[0], _second(b_hn),
                       lengths, reverse, save, encode_config(config))
    return out, h_n
