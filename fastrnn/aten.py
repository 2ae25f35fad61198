"""The "aten" backend: the recurrences on torch's own fused CPU loops (`torch._VF`).

On a CPU nothing beats ATen's native loop by much: it runs one GEMM for the input projection of
the whole sequence, one small GEMM per step, and (for the LSTM in float32/bfloat16) oneDNN's
fused cell. torch.nn calls exactly these functions, so this backend is at parity with torch.nn by
construction, while the reference backend (a Python loop of autograd ops) stays the oracle.

Two entry points (the modules themselves run torch.nn's own forward on this backend, which makes
these same calls):
- `elman_layer` / `lstm_layer`: one layer, one direction, with `fastrnn.reference`'s signature,
  for `functional.rnn_stack`'s per-layer loop.
- `run_stack`: every layer and direction in one `_VF` call, `functional.rnn_stack`'s signature;
  one call instead of L*D saves the per-layer Python and concatenation work, which is what keeps
  small shapes at parity with torch.nn.

Variable lengths use `_VF`'s packed form (`batch_sizes`), which needs sequences sorted by length
and none empty: sequences are sorted, empty ones are left out (their state stays h0, their output
zero), and everything is put back in the caller's order. When every sequence is T long the padded
form runs instead (same result, no packing). A reverse direction on its own (`reverse=True` in the
per-layer ops) reverses each sequence within its own length with a gather, runs forwards and
gathers back, so it starts at each sequence's own last step.

Shape letters: T steps, B batch, I input, H hidden, R recurrent (= P with projection, else H),
L layers, D directions.
"""
import torch

__all__ = ["elman_layer", "lstm_layer", "run_stack"]

# Looked up once: torch._VF resolves names through a Python __getattr__ on every access.
_VF_FUNCS = {"RNN_TANH": torch._VF.rnn_tanh, "RNN_RELU": torch._VF.rnn_relu, "LSTM": torch._VF.lstm}


def _flat_params(weights, is_lstm):
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
        w_hr = w[4] if is_lstm and len(w) > 4 else None
        if w_hr is not None:
            # _VF spots a projection by h0 and c0 having different widths, so R must be < H.
            if w_hr.shape[0] >= w_hr.shape[1]:
                raise ValueError("proj_size has to be smaller than hidden_size")
            params.append(w_hr)
    return params, has_biases


def _call(mode, x, hx, params, has_biases, num_layers, dropout, training, bidirectional, batch_sizes=None):
    """One _VF call. x: [T, B, I] (or packed data [N, I] with batch_sizes); hx: a tuple of
    [L*D, B, *] states. Returns (out, h_n) or (out, h_n, c_n)."""
    fn = _VF_FUNCS[mode]
    state = hx if mode == "LSTM" else hx[0]
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


def _reverse_index(T, lengths, device):
    """[T, B] int64: step t of each sequence reversed within its own length (identity past it)."""
    t = torch.arange(T, device=device).unsqueeze(1)          # [T, 1]
    L = lengths.to(device=device, dtype=torch.int64).unsqueeze(0)  # [1, B]
    return torch.where(t < L, L - 1 - t, t)


def _one_direction(mode, x, hx, params, has_biases, reverse, lengths):
    """One layer, one direction: x: [T, B, I], hx: tuple of [B, *] -> (out [T, B, R], states)."""
    hx = tuple(h.unsqueeze(0) for h in hx)
    if not reverse:
        out, states = _run(mode, x, hx, params, has_biases, 1, 0.0, False, False, lengths)
    elif lengths is None:
        out, states = _run(mode, x.flip(0), hx, params, has_biases, 1, 0.0, False, False, None)
        out = out.flip(0)
    else:
        idx = _reverse_index(x.shape[0], lengths, x.device).unsqueeze(-1)  # [T, B, 1]
        x_rev = x.gather(0, idx.expand(-1, -1, x.shape[-1]))
        out, states = _run(mode, x_rev, hx, params, has_biases, 1, 0.0, False, False, lengths)
        out = out.gather(0, idx.expand(-1, -1, out.shape[-1]))  # the map is its own inverse
    return out, tuple(s.squeeze(0) for s in states)


def elman_layer(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *,
                nonlinearity="tanh", reverse=False, lengths=None):
    """One Elman layer, one direction. x: [T, B, I], h0: [B, H], lengths: [B] or None
    -> (out: [T, B, H], h_n: [B, H])."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
    params, has_biases = _flat_params([(weight_ih, weight_hh, bias_ih, bias_hh)], False)
    out, (h_n,) = _one_direction(mode, x, (h0,), params, has_biases, reverse, lengths)
    return out, h_n


def lstm_layer(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None, *,
               reverse=False, lengths=None):
    """One LSTM layer, one direction. x: [T, B, I], h0: [B, R], c0: [B, H], lengths: [B] or None
    -> (out: [T, B, R], h_n: [B, R], c_n: [B, H])."""
    params, has_biases = _flat_params([(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)], True)
    out, (h_n, c_n) = _one_direction("LSTM", x, (h0, c0), params, has_biases, reverse, lengths)
    return out, h_n, c_n


def run_stack(x, hx, weights, *, mode, num_layers, bidirectional, dropout=0.0, training=False,
              lengths=None):
    """Every layer and direction in one _VF call; `functional.rnn_stack`'s contract.

    x: [T, B, I]; hx: h0 [L*D, B, R] for RNN modes, (h0 [L*D, B, R], c0 [L*D, B, H]) for 'LSTM';
    weights: L*D tuples in torch.nn's order (w_ih, w_hh, b_ih, b_hh[, w_hr]); lengths: [B] or None.
    Returns (out [T, B, D*R], h_n [L*D, B, R]) for RNNs, (out, (h_n, c_n [L*D, B, H])) for LSTM.
    Dropout is _VF's own (training only, between layers), as in torch.nn.
    """
    if mode not in _VF_FUNCS:
        raise ValueError(f"Unknown mode '{mode}'")
    is_lstm = mode == "LSTM"
    params, has_biases = _flat_params(weights, is_lstm)
    states = tuple(hx) if is_lstm else (hx,)
    out, final = _run(mode, x, states, params, has_biases, num_layers, float(dropout), bool(training),
                      bool(bidirectional), lengths)
    return (out, final) if is_lstm else (out, final[0])
