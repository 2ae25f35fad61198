"""Multi-layer, bidirectional recurrences on top of the per-layer ops of a backend.

This is the one place that knows about layers, directions and inter-layer dropout; the modules
call it (on the "reference" and "triton" backends; on "aten" they run torch.nn's own forward), and
it calls one `elman_layer` / `lstm_layer` per layer and direction; on "triton" one
`elman_bidirectional` / `lstm_bidirectional` launch per bidirectional layer; on "aten" one `_VF`
call for the whole stack.
"""
import torch
import torch.nn.functional as F

from . import aten
from .backends import layer_ops, resolve


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
    concrete = resolve(backend, x)
    if concrete == "aten":  # one _VF call for the whole stack, as torch.nn makes it
        return aten.run_stack(x, hx, weights, mode=mode, num_layers=num_layers,
                              bidirectional=bidirectional, dropout=dropout, training=training,
                              lengths=lengths)
    elman_layer, lstm_layer = layer_ops(concrete)
    is_lstm = mode == "LSTM"
    h0, c0 = hx if is_lstm else (hx, None)
    D = 2 if bidirectional else 1
    layer_in, h_n, c_n = x, [], []
    for layer in range(num_layers):
        ks = range(layer * D, (layer + 1) * D)
        nonlinearity = "relu" if mode == "RNN_RELU" else "tanh"
        if D == 2 and concrete == "triton":  # both directions in one launch, no concatenation
            from . import fused  # imported by layer_ops already; Triton loads only when used
            pair = [weights[k] for k in ks]
            if is_lstm:
                layer_in, h, c = fused.lstm_bidirectional(layer_in, h0[ks.start:ks.stop],
                                                          c0[ks.start:ks.stop], pair, lengths=lengths)
                c_n.extend(c)
            else:
                layer_in, h = fused.elman_bidirectional(layer_in, h0[ks.start:ks.stop], pair,
                                                        nonlinearity=nonlinearity, lengths=lengths)
            h_n.extend(h)
        else:
            outs = []
            for direction, k in enumerate(ks):
                reverse = direction == 1
                if is_lstm:
                    out, h, c = lstm_layer(layer_in, h0[k], c0[k], *weights[k], reverse=reverse,
                                           lengths=lengths)
                    c_n.append(c)
                else:
                    out, h = elman_layer(layer_in, h0[k], *weights[k], nonlinearity=nonlinearity,
                                         reverse=reverse, lengths=lengths)
                outs.append(out)
                h_n.append(h)
            layer_in = outs[0] if D == 1 else torch.cat(outs, dim=-1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = F.dropout(layer_in, p=dropout, training=True)
    h_n = torch.stack(h_n)
    return (layer_in, (h_n, torch.stack(c_n))) if is_lstm else (layer_in, h_n)
