"""Multi-layer, bidirectional recurrences on top of the per-layer ops of a backend.

This is the one place that knows about layers, directions and inter-layer dropout; the modules
call it (on the "reference" and "triton" backends; on "aten" they run torch.nn's own forward unless
traced or vmapped), and it runs one layer at a time: on "triton" one launch per layer whatever its
directions (`fused.elman_directions` / `lstm_directions`), on "reference" one `elman_layer` /
`lstm_layer` per direction, on "aten" one `_VF` call for the whole stack (one opaque op per layer
when torch.compile traces it or vmap batches it: see fastrnn/aten.py).
"""
import torch
import torch.nn.functional as F

from . import aten, reference
from .backends import resolve


def rnn_stack(x, hx, weights, *, mode, num_layers, bidirectional, dropout=0.0, training=False,
              lengths=None, backend="auto"):
    """Run a stack of recurrent layers.

    x: [T, B, I] (time-major); hx: h0 [L*D, B, R] for RNN modes, (h0 [L*D, B, R], c0 [L*D, B, H])
    for 'LSTM'; weights: one tuple per layer and direction, in torch.nn's order
    (layer-major, forward then reverse), each (w_ih, w_hh, b_ih, b_hh) for RNNs and
    (w_ih, w_hh, b_ih, b_hh, w_hr) for the LSTM, with None for absent biases / projection;
    mode: 'RNN_TANH', 'RNN_RELU' or 'LSTM'; lengths: [B] int64 or None (every sequence T long).

    Returns (out [T, B, D*R], h_n [L*D, B, R]) for RNNs, (out, (h_n, c_n [L*D, B, H])) for LSTM.
    Dropout (training only) applies to every layer's output but the last; h_n / c_n come before it.
    """
    concrete = resolve(backend, x, mode=mode)
    is_lstm = mode == "LSTM"
    h0, c0 = hx if is_lstm else (hx, None)
    if concrete == "aten" and not aten.traced(x, h0, c0, *(w for ws in weights for w in ws)):
        # one _VF call for the whole stack, as torch.nn makes it
        return aten.run_stack(x, hx, weights, mode=mode, num_layers=num_layers,
                              bidirectional=bidirectional, dropout=dropout, training=training,
                              lengths=lengths)
    elman, lstm = _layer_ops(concrete)
    D = 2 if bidirectional else 1
    nonlinearity = "relu" if mode == "RNN_RELU" else "tanh"
    layer_in, h_n, c_n = x, [], []
    for layer in range(num_layers):
        ks = slice(layer * D, (layer + 1) * D)
        if is_lstm:
            layer_in, h, c = lstm(layer_in, h0[ks], c0[ks], weights[ks], lengths=lengths)
            c_n.append(c)
        else:
            layer_in, h = elman(layer_in, h0[ks], weights[ks], nonlinearity=nonlinearity, lengths=lengths)
        h_n.append(h)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = F.dropout(layer_in, p=dropout, training=True)
    h_n = torch.cat(h_n)
    return (layer_in, (h_n, torch.cat(c_n))) if is_lstm else (layer_in, h_n)


def _layer_ops(concrete):
    """(elman, lstm) of a backend: all directions of one layer, with `fused.elman_directions` /
    `lstm_directions`'s signature (h0 [D, B, R], c0 [D, B, H], one weight tuple per direction)
    -> (out [T, B, D*R], h_n [D, B, R][, c_n [D, B, H]]). "triton" runs them in one launch, "aten"
    (traced or vmapped only) in one opaque op; the reference runs its one-direction ops in turn and
    concatenates."""
    if concrete == "triton":
        from . import fused  # Triton loads only when used
        return fused.elman_directions, fused.lstm_directions
    if concrete == "aten":
        def elman_op(x, h0, weights, *, nonlinearity, lengths):
            mode = "RNN_RELU" if nonlinearity == "relu" else "RNN_TANH"
            return aten.layer_directions(x, h0, None, weights, mode=mode, lengths=lengths)[:2]

        def lstm_op(x, h0, c0, weights, *, lengths):
            return aten.layer_directions(x, h0, c0, weights, mode="LSTM", lengths=lengths)

        return elman_op, lstm_op
    elman_layer, lstm_layer = reference.elman_layer, reference.lstm_layer

    def elman(x, h0, weights, *, nonlinearity, lengths):
        runs = [elman_layer(x, h0[d], *w, nonlinearity=nonlinearity, reverse=d == 1, lengths=lengths)
                for d, w in enumerate(weights)]
        return _join(runs)

    def lstm(x, h0, c0, weights, *, lengths):
        return _join([lstm_layer(x, h0[d], c0[d], *w, reverse=d == 1, lengths=lengths)
                      for d, w in enumerate(weights)])

    return elman, lstm


def _join(runs):
    """Per-direction (out, h_n[, c_n]) -> (out concatenated on features, states stacked)."""
    outs, *states = zip(*runs)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
    return (out, *(torch.stack(s) for s in states))
