"""The "aten" backend: the recurrences on torch's own fused CPU loops (`torch._VF`).

On a CPU nothing beats ATen's native loop by much: it runs one GEMM for the input projection of
the whole sequence, one small GEMM per step, and (for the LSTM in float32/bfloat16) oneDNN's
fused cell. torch.nn calls exactly these functions, so this backend is at parity with torch.nn by
construction, while the reference backend (a Python loop of autograd ops) stays the oracle.

Two entry points (the modules themselves run torch.nn's own forward on this backend, which makes
these same calls):
- `run_stack`: every layer and direction in one `_VF` call, `functional.rnn_stack`'s signature;
  one call instead of L*D saves the per-layer Python and concatenation work, which is what keeps
  small shapes at parity with torch.nn.
- `layer_directions`: one layer (one or both directions) as an opaque custom op, for
  `functional.rnn_stack`'s per-layer loop when torch.compile traces or vmap batches the call
  (see the section of this file that defines it).

Variable lengths use `_VF`'s packed form (`batch_sizes`), which needs sequences sorted by length
and none empty: sequences are sorted, empty ones are left out (their state stays h0, their output
zero), and everything is put back in the caller's order. When every sequence is T long the padded
form runs instead (same result, no packing).

Shape letters: T steps, B batch, I input, H hidden, R recurrent (= P with projection, else H),
L layers, D directions.
"""
from typing import Optional

import torch
from torch import Tensor

from . import cellspec
from .transforms import call, first_order, transformable

__all__ = ["run_stack", "layer_directions", "traced"]

# mode -> (its cell, its _VF function), looked up once: torch._VF resolves names through a Python
# __getattr__ on every access.
_VF_FUNCS = {mode: (cell, cellspec.vf(name)) for cell in cellspec.CELLS for mode, name in cell.modes.items()}


def _flat_params(weights):
    """Flatten per-(layer, direction) weight tuples into _VF's flat list.

    weights: tuples (w_ih, w_hh, b_ih, b_hh[, w_hr]). Returns (params, has_biases). _VF wants
    either both biases or neither; a lone bias gets a zero partner (no grad, same result).
    """
    has_biases = any(w[2] is not None or w[3] is not None for w in weights)
    if has_biases and all(len(w) == 4 or w[4] is None for w in weights) and \
            all(w[2] is not None and w[3] is not None for w in weights):
        return [t for w in weights for t in w[:4]], True     # the common case, kept cheap
    params = []
    for w in weights:
        w_ih, w_hh, b_ih, b_hh = w[:4]
        params += [w_ih, w_hh]
        if has_biases:
            rows = w_hh.shape[0]
            params.append(b_ih if b_ih is not None else w_hh.new_zeros(rows))
            params.append(b_hh if b_hh is not None else w_hh.new_zeros(rows))
        w_hr = w[4] if len(w) > 4 else None
        if w_hr is not None:
            # _VF spots a projection by h0 and c0 having different widths, so R must be < H.
            if w_hr.shape[0] >= w_hr.shape[1]:
                raise ValueError("proj_size has to be smaller than hidden_size")
            params.append(w_hr)
    return params, has_biases


def _call(mode, x, hx, params, has_biases, num_layers, dropout, training, bidirectional, batch_sizes=None):
    """One _VF call. x: [T, B, I] (or packed data [N, I] with batch_sizes); hx: a tuple of
    [L*D, B, *] states. Returns (out, h_n) or (out, h_n, c_n)."""
    cell, fn = _VF_FUNCS[mode]
    state = cell.hx(hx)
    if batch_sizes is None:
        return fn(x, state, params, has_biases, num_layers, dropout, training, bidirectional, False)
    return fn(x, batch_sizes, state, params, has_biases, num_layers, dropout, training, bidirectional)


def _run(mode, x, hx, params, has_biases, num_layers, dropout, training, bidirectional, lengths):
    """_VF over x: [T, B, I] with optional lengths: [B], states hx: tuple of [L*D, B, *].

    Returns (out [T, B, D*R], tuple of final states [L*D, B, *]) in the caller's batch order.
    """
    T, B = x.shape[0], x.shape[1]
    args = (params, has_biases, num_layers, dropout, training, bidirectional)
    if lengths is None or bool((lengths == T).all()):
        res = _call(mode, x, hx, *args)
        return res[0], tuple(res[1:])
    lens = lengths.detach().to("cpu", torch.int64)
    order = torch.argsort(lens, descending=True, stable=True)
    n = int((lens > 0).sum())                      # empty sequences are left out of the packed call
    sorted_idx = order[:n]
    dev_idx = sorted_idx.to(x.device)
    if n == 0:
        D = 2 if bidirectional else 1
        width = hx[0].shape[-1] * D
        return x.new_zeros(T, B, width), tuple(hx)
    # Already sorted with none empty (a module unpacking a PackedSequence): no permutation copies.
    in_order = n == B and bool((sorted_idx == torch.arange(B)).all())
    x_sorted = x if in_order else x.index_select(1, dev_idx)
    hx_sorted = list(hx) if in_order else [h.index_select(1, dev_idx) for h in hx]
    data, batch_sizes = torch._pack_padded_sequence(x_sorted, lens[sorted_idx], False)
    res = _call(mode, data, hx_sorted, *args, batch_sizes=batch_sizes)
    out_sorted, _ = torch._pad_packed_sequence(res[0], batch_sizes, False, 0.0, T)  # [T, n, D*R]
    if in_order:
        return out_sorted, tuple(res[1:])
    if n == B:
        unsort = torch.argsort(sorted_idx).to(x.device)
        out = out_sorted.index_select(1, unsort)
        states = tuple(s.index_select(1, unsort) for s in res[1:])
    else:
        out = out_sorted.new_zeros(T, B, out_sorted.shape[-1]).index_copy(1, dev_idx, out_sorted)
        states = tuple(h.index_copy(1, dev_idx, s) for h, s in zip(hx, res[1:]))
    return out, states


def run_stack(x, hx, weights, *, mode, num_layers, bidirectional, dropout=0.0, training=False,
              lengths=None):
    """Every layer and direction in one _VF call; `functional.rnn_stack`'s contract.

    x: [T, B, I]; hx: h0 [L*D, B, R] ('RNN_TANH', 'RNN_RELU', 'GRU') or (h0 [L*D, B, R],
    c0 [L*D, B, H]) ('LSTM'); weights: L*D tuples in torch.nn's order (w_ih, w_hh, b_ih, b_hh[, w_hr]);
    lengths: [B] or None. Returns (out [T, B, D*R], h_n [L*D, B, R]), for the LSTM
    (out, (h_n, c_n [L*D, B, H])). Dropout is _VF's own (training only, between layers), as in torch.nn.
    """
    if mode not in _VF_FUNCS:
        raise ValueError(f"Unknown mode '{mode}'")
    cell = _VF_FUNCS[mode][0]
    params, has_biases = _flat_params(weights)
    out, final = _run(mode, x, cell.states_of(hx), params, has_biases, num_layers, float(dropout),
                      bool(training), bool(bidirectional), lengths)
    return out, cell.hx(final)


# --- the same calls as one opaque op per layer: under torch.compile and torch.func.vmap -------------
# Traced, torch's RNN call breaks: with gradients on, AOTAutograd rejects oneDNN's RNN layer on CPU
# (the Parameters it saves), and vmap has no batching rule for aten::lstm / rnn_tanh. As a custom
# op it stays opaque to both: the compiled graph calls it, and vmap loops over the vmapped dim. Its
# backward is torch's own backward of the layer, recomputed inside an op (torch.func.vjp records
# there, where autograd does not): one extra forward per layer, paid only on these two paths.
_SLOTS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")  # per direction, forward then reverse


def _layer(x, h0, c0, weights, mode, lengths, for_vjp=False):
    """One layer, D = len(weights) directions, through `_run` -> (out [T, B, D*R], h_n, c_n or None).

    `for_vjp`: the call torch.func.vjp differentiates in the backward op. oneDNN keeps what its
    backward needs only in training mode (no dropout here, so nothing else changes), and the packed
    _VF call cannot read functorch's wrapped tensors, so variable lengths run by length instead."""
    params, has_biases = _flat_params(weights)
    hx = (h0,) if c0 is None else (h0, c0)
    D = len(weights)
    if for_vjp and lengths is not None:
        out, states = _by_length(mode, x, hx, params, has_biases, D == 2, lengths)
    else:
        out, states = _run(mode, x, hx, params, has_biases, 1, 0.0, for_vjp, D == 2, lengths)
    return out, states[0], None if c0 is None else states[1]


def _by_length(mode, x, hx, params, has_biases, bidirectional, lengths):
    """What `_run` gives with `lengths`, as one padded _VF call per group of equal-length sequences
    (a sequence of length L is its first L steps; the reverse direction starts at its step L - 1)."""
    T, B = x.shape[:2]
    out = x.new_zeros(T, B, (2 if bidirectional else 1) * hx[0].shape[-1])
    states = list(hx)
    lengths = lengths.to("cpu", torch.int64)
    for L in lengths.unique().tolist():
        if L == 0:
            continue  # an empty sequence keeps its state and outputs zeros
        idx = (lengths == L).nonzero().squeeze(1).to(x.device)
        res = _call(mode, x[:L].index_select(1, idx), [h.index_select(1, idx) for h in hx], params,
                    has_biases, 1, 0.0, True, bidirectional)
        padded = torch.cat([res[0], res[0].new_zeros(T - L, *res[0].shape[1:])])
        out = out.index_copy(1, idx, padded)
        states = [s.index_copy(1, idx, r) for s, r in zip(states, res[1:])]
    return out, tuple(states)


def _directions(w):
    """The op's ten weight slots -> one (w_ih, w_hh, b_ih, b_hh, w_hr) tuple per direction."""
    return [tuple(w[:5])] if w[5] is None else [tuple(w[:5]), tuple(w[5:])]


@torch.library.custom_op("fastrnn::aten_layer", mutates_args=())
def layer_op(x: Tensor, h0: Tensor, c0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
             b_hh: Optional[Tensor], w_hr: Optional[Tensor], w_ih_rev: Optional[Tensor],
             w_hh_rev: Optional[Tensor], b_ih_rev: Optional[Tensor], b_hh_rev: Optional[Tensor],
             w_hr_rev: Optional[Tensor], lengths: Optional[Tensor], mode: str) -> tuple[Tensor, Tensor, Tensor]:
    w = (w_ih, w_hh, b_ih, b_hh, w_hr, w_ih_rev, w_hh_rev, b_ih_rev, b_hh_rev, w_hr_rev)
    out, h_n, c_n = _layer(x, h0, c0, _directions(w), mode, lengths)
    # outputs must not alias inputs (states come back as hx when every length is 0)
    return out, h_n.clone(), x.new_empty(0) if c_n is None else c_n.clone()


@layer_op.register_fake
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ih_rev, w_hh_rev, b_ih_rev, b_hh_rev, w_hr_rev, lengths, mode):
    D = 1 if w_ih_rev is None else 2
    c_n = x.new_empty(0) if c0 is None else c0.new_empty(c0.shape)
    return x.new_empty(x.shape[0], x.shape[1], D * h0.shape[-1]), h0.new_empty(h0.shape), c_n


@torch.library.custom_op("fastrnn::aten_layer_bwd", mutates_args=())
def layer_bwd_op(dout: Tensor, dh_n: Tensor, dc_n: Tensor, x: Tensor, h0: Tensor, c0: Optional[Tensor],
                 weights: list[Optional[Tensor]], lengths: Optional[Tensor], mode: str) -> list[Tensor]:
    """The gradients of (x, h0, c0, *weights), an empty tensor where an input is None."""
    inputs = [x, h0, c0, *weights]
    present = [i for i, t in enumerate(inputs) if t is not None]

    def forward(*tensors):
        args = list(inputs)
        for i, t in zip(present, tensors):
            args[i] = t
        out, h_n, c_n = _layer(args[0], args[1], args[2], _directions(args[3:]), mode, lengths, for_vjp=True)
        return (out, h_n) if c_n is None else (out, h_n, c_n)

    with torch.enable_grad():  # oneDNN keeps what its backward needs only with grad mode on
        outputs, vjp = torch.func.vjp(forward, *(inputs[i] for i in present))
        grads = iter(vjp((dout, dh_n, dc_n)[:len(outputs)]))
    # Outputs may alias neither inputs nor each other: a state no step changed passes its gradient
    # straight through, and torch may return several weight gradients as views of one buffer.
    taken = {t.untyped_storage().data_ptr() for t in (dout, dh_n, dc_n, *inputs) if t is not None}
    out = []
    for t in inputs:
        g = next(grads) if t is not None else x.new_empty(0)
        ptr = g.untyped_storage().data_ptr()
        out.append(g.clone() if ptr in taken else g)
        taken.add(ptr)
    return out


@layer_bwd_op.register_fake
def _(dout, dh_n, dc_n, x, h0, c0, weights, lengths, mode):
    return [x.new_empty(0) if t is None else t.new_empty(t.shape) for t in (x, h0, c0, *weights)]


def _layer_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:14])
    ctx.mode = inputs[14]


@first_order("aten")
def _layer_backward(ctx, dout, dh_n, dc_n):
    x, h0, c0, *w, lengths = ctx.saved_tensors
    out_shape = (x.shape[0], x.shape[1], (1 if w[5] is None else 2) * h0.shape[-1])
    dout = x.new_zeros(out_shape) if dout is None else dout
    dh_n = torch.zeros_like(h0) if dh_n is None else dh_n
    dc_n = (x.new_empty(0) if c0 is None else torch.zeros_like(c0)) if dc_n is None else dc_n
    grads = layer_bwd_op(dout, dh_n, dc_n, x, h0, c0, w, lengths, ctx.mode)
    return tuple(None if t is None else g for t, g in zip((x, h0, c0, *w), grads)) + (None, None)


layer_op.register_autograd(_layer_backward, setup_context=_layer_setup)
_LAYER = transformable(layer_op, _layer_setup, _layer_backward, "aten")


def traced(*tensors):
    """Is this call being traced by torch.compile / export, or vmapped? Then torch's RNN call has to
    run as `layer_op` (see above). vmap is spotted by its batched tensors (functorch's own tests;
    torch has no public one), looked for only while a torch.func transform is active."""
    return torch.compiler.is_compiling() or (torch._C._are_functorch_transforms_active() and any(
        t is not None and torch._C._functorch.is_batchedtensor(t) for t in tensors))


def layer_directions(x, h0, c0, weights, *, mode, lengths=None):
    """One layer in D = len(weights) directions as `layer_op`. x: [T, B, I], h0: [D, B, R],
    c0: [D, B, H] or None, weights: D tuples (w_ih, w_hh, b_ih, b_hh, w_hr or None)
    -> (out [T, B, D*R], h_n [D, B, R], c_n [D, B, H] or None)."""
    w = [t for direction in weights for t in (*direction, None)[:5]] + [None] * 5 * (2 - len(weights))
    out, h_n, c_n = call(_LAYER, layer_op, x, h0, c0, *w, lengths, mode)
    return out, h_n, (None if c0 is None else c_n)
