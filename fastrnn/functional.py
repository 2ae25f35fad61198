"""Multi-layer, bidirectional recurrences on top of the per-layer ops of a backend.

This is the one place that knows about layers, directions and inter-layer dropout; the modules
call it (on the "reference" and "triton" backends; on "aten" they run torch.nn's own forward unless
traced or vmapped), and it runs one layer at a time: on "triton" one launch per layer whatever its
directions (the cell's `fused.<cell>_directions`), on "reference" the cell's reference layer per
direction, on "aten" one `_VF` call for the whole stack (one opaque op per layer when
torch.compile traces it or vmap batches it: see fastrnn/aten.py). What differs between cells is
read from their description (fastrnn/cellspec.py).
"""
import torch
import torch.nn.functional as F

from . import aten, backends, cellspec
from .backends import BackendError, autocast_active, choose
from .errors import scalar_name


def rnn_stack(x, hx, weights, *, mode, num_layers, bidirectional, dropout=0.0, training=False,
              lengths=None, backend="auto", strategy=None, signature=None):
    """Run a stack of recurrent layers.

    x: [T, B, I] (time-major); hx: h0 [L*D, B, R] for the Elman RNN and the GRU,
    (h0 [L*D, B, R], c0 [L*D, B, H]) for the LSTM; weights: one tuple per layer and direction, in
    torch.nn's order (layer-major, forward then reverse), each (w_ih, w_hh, b_ih, b_hh) for the
    Elman RNN and the GRU and (w_ih, w_hh, b_ih, b_hh, w_hr) for the LSTM, with None for absent
    biases / projection; mode: 'RNN_TANH', 'RNN_RELU', 'LSTM' or 'GRU'; lengths: [B] int64 or None
    (every sequence T long). R = H unless the LSTM projects.

    Returns (out [T, B, D*R], h_n [L*D, B, R]), or (out, (h_n, c_n [L*D, B, H])) for the LSTM.
    Dropout (training only) applies to every layer's output but the last; h_n / c_n come before it.
    On CUDA, "auto" is decided per call signature (fastrnn/autotune.py): torch.nn's path or triton
    with the launch strategy that was fastest here. `signature`: the one the caller decided by (a
    module's, built before its checks; a cell's names torch's cell class), else this call's own.
    `strategy`: triton's launch strategy for every layer ('rows', 'split', 'stepwise'; None: auto's
    choice, else FASTRNN_TRITON_STRATEGY or the heuristic); only on the triton backend. With a
    strategy, "auto" on CUDA runs triton without deciding (a strategy is a choice of triton);
    where auto would run anything else (CPU), it raises BackendError.
    Under autocast the whole recurrence runs in autocast's dtype, as torch.nn's RNNs do: x, hx and
    the weights are cast once here, and the backend runs with autocast off.
    """
    if autocast_active(x.device.type):
        device_type = x.device.type
        x, hx, weights = autocast_args(device_type, x, hx, weights)
        with torch.autocast(device_type, enabled=False):
            return rnn_stack(x, hx, weights, mode=mode, num_layers=num_layers, bidirectional=bidirectional,
                             dropout=dropout, training=training, lengths=lengths, backend=backend,
                             strategy=strategy, signature=signature)
    cell = cellspec.of(mode)
    states = cell.states_of(hx)
    if strategy is not None:
        signature = None  # a strategy names triton: auto on CUDA has nothing to decide
    elif signature is None and backend == "auto" and backends.tunes_by_signature(x):
        signature = stack_signature(x, states, weights, mode=mode, num_layers=num_layers,
                                    bidirectional=bidirectional, lengths=lengths)
    concrete, chosen = choose(backend, x, mode=mode, signature=signature)
    if strategy is not None and concrete != "triton":
        raise BackendError(f"strategy={strategy!r} is a launch strategy of the triton backend; this call "
                           f"runs on {concrete!r} (backend={backend!r})")
    strategy = strategy or chosen
    # the last state is H wide (c for the LSTM, whose h may be projected to R; else h)
    check_weights(x, weights, gates=cell.gates, hidden_size=states[-1].shape[-1],
                  recurrent_size=states[0].shape[-1], bidirectional=bidirectional, batch=states[0].shape[1])
    if lengths is not None and not torch.compiler.is_compiling():  # a value check: not while tracing
        _check_lengths(lengths, x.shape[0], x.shape[1])
    if concrete == "aten" and not aten.traced(x, *states, *(w for ws in weights for w in ws)):
        # one _VF call for the whole stack, as torch.nn makes it
        return aten.run_stack(x, hx, weights, mode=mode, num_layers=num_layers,
                              bidirectional=bidirectional, dropout=dropout, training=training,
                              lengths=lengths)
    layer_op = _layer_op(concrete, cell, mode, None if strategy is None else {"STRATEGY": strategy})
    D = 2 if bidirectional else 1
    layer_in, finals = x, [[] for _ in states]
    for layer in range(num_layers):
        ks = slice(layer * D, (layer + 1) * D)
        layer_in, *ends = layer_op(layer_in, tuple(s[ks] for s in states), weights[ks], lengths)
        for final, end in zip(finals, ends):
            final.append(end)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = F.dropout(layer_in, p=dropout, training=True)
    return layer_in, cell.hx([torch.cat(final) for final in finals])


def stack_signature(x, states, weights, *, mode, num_layers, bidirectional, lengths, cell=False):
    """The autotune Signature of an rnn_stack call (x [T, B, I], its states and weights), or None
    for a dtype the triton kernels do not run. A backward will run when grad mode is on and any
    input or weight requires grad."""
    from .autotune import signature
    tensors = (x, *states, *(w for ws in weights for w in ws))
    training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return signature(mode, T=x.shape[0], B=x.shape[1], I=x.shape[-1], H=states[-1].shape[-1],
                     R=states[0].shape[-1], layers=num_layers, bidirectional=bidirectional, dtype=x.dtype,
                     training=training, lengths=lengths is not None, cell=cell)


def _check_lengths(lengths, T, B):
    """lengths: one per sequence, each in [0, T] (the modules' padding makes them so; a caller of
    rnn_stack could pass anything, which the backends would read differently)."""
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have one entry per sequence, shape ({B},), got {tuple(lengths.shape)}")
    if bool(((lengths < 0) | (lengths > T)).any()):
        raise ValueError(f"lengths must lie in [0, T] with T = {T}, got {lengths.tolist()}")


def autocast_result_dtype(cell, kind, device_type, states):
    """The dtype torch.nn's `kind` ("layer" or "cell") of `cell` returns under autocast on
    `device_type` when it is not the autocast dtype, else None. `states`: the initial states.

    On CPU, torch's GRU, GRUCell and LSTMCell (`cell.cpu_autocast_gemms_only`) do only their GEMMs
    in the autocast dtype and update the H-wide state (c for the LSTM cell, h for the GRU) in that
    state's own dtype, so their results come back in the wider of the two; rnn_stack computes in
    the autocast dtype throughout, and the module casts its results to this dtype."""
    if device_type != "cpu" or kind not in cell.cpu_autocast_gemms_only or not autocast_active("cpu"):
        return None
    return torch.promote_types(torch.get_autocast_dtype("cpu"), states[-1].dtype)


def autocast_args(device_type, x, hx, weights):
    """x, hx (a tensor or a tuple) and the weight tuples cast to `device_type`'s autocast dtype."""
    dtype = torch.get_autocast_dtype(device_type)
    cast = (lambda t: None if t is None else t.to(dtype))
    hx = tuple(map(cast, hx)) if isinstance(hx, (tuple, list)) else cast(hx)
    return cast(x), hx, [tuple(map(cast, w)) for w in weights]


def _as_expected(weights, shapes, D, device, dtype):
    """Does every parameter have its expected shape (shapes[0] in layer 0, shapes[1] after), the
    device and (unless None) the dtype?"""
    for k, w in enumerate(weights):
        for t, want in zip(w, shapes[k >= D]):
            if t is not None and (t.shape != want or t.device != device or (dtype is not None and t.dtype != dtype)):
                return False
    return True


def check_weights(x, weights, *, gates, hidden_size, recurrent_size, bidirectional, batch, input_size=None,
                  dtype=None, names=None):
    """Raise torch's error (its message where it has one) for a parameter the recurrence cannot
    use with input `x` (any layout, features last): on another device, in another dtype (outside
    autocast), or of the wrong shape. A weight replaced by hand (`m.weight_hh_l0 = Parameter(...)`)
    would otherwise give garbage or read past its end in a kernel.

    weights: per layer and direction (torch's order) (w_ih, w_hh, b_ih, b_hh[, w_hr]), None where
    absent; `input_size`: what layer 0's weight_ih should take, and `dtype` what every parameter's
    dtype should be (x's by default; a module passes its own, so that input of the wrong size or
    dtype gets torch's input error instead);
    `names(layer, direction, kind)` names a parameter (torch.nn.RNN's names by default).
    """
    D, G, H, R = 2 if bidirectional else 1, gates, hidden_size, recurrent_size
    check_dtype = not autocast_active(x.device.type)
    dtype = x.dtype if dtype is None else dtype
    # One cheap pass for the common case (every call of a module pays for it); the messages below
    # are worked out only when something is wrong.
    first = x.shape[-1] if input_size is None else input_size
    hh, bias, hr = (G * H, R), (G * H,), (R, H)
    shapes = ((G * H, first), hh, bias, bias, hr), ((G * H, D * R), hh, bias, bias, hr)
    if _as_expected(weights, shapes, D, x.device, dtype if check_dtype else None):
        return
    names = names or (lambda layer, d, kind: f"{kind}_l{layer}{'_reverse' if d else ''}")
    rows = x.numel() // max(x.shape[-1], 1)
    for k, w in enumerate(weights):
        layer, d = divmod(k, D)
        width = (x.shape[-1] if input_size is None else input_size) if layer == 0 else D * R
        expected = {"weight_ih": (G * H, width), "weight_hh": (G * H, R), "bias_ih": (G * H,),
                    "bias_hh": (G * H,), "weight_hr": (R, H)}
        for kind, t in zip(expected, w):
            if t is None:
                continue
            if t.device != x.device:
                raise RuntimeError("Input and parameter tensors are not at the same device, found input "
                                   f"tensor at {x.device} and parameter tensor at {t.device}")
            if check_dtype and t.dtype != dtype:
                a, b = (t.dtype, dtype) if kind.startswith("bias") else (dtype, t.dtype)
                raise RuntimeError(f"self and mat2 must have the same dtype, but got {scalar_name(a)} "
                                   f"and {scalar_name(b)}")
            if kind.startswith("weight") and t.dim() != 2:
                raise RuntimeError(f"mat2 must be a matrix, got {t.dim()}-D tensor")
            want = expected[kind]
            if kind in ("weight_ih", "weight_hh") and t.shape[1] != want[1]:  # torch's matmul says it
                m = rows if kind == "weight_ih" else batch
                raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({m}x{want[1]} and "
                                   f"{t.shape[1]}x{t.shape[0]})")
            if tuple(t.shape) != want:
                raise RuntimeError(f"Expected {names(layer, d, kind)} of shape {want}, got {tuple(t.shape)}")


def _layer_op(concrete, cell, mode, config=None):
    """One layer in all its directions on a backend: op(x [T, B, I], states (one [D, B, *] tensor
    per state of `cell`), weights (one tuple per direction), lengths) -> (out [T, B, D*R], *states
    [D, B, *]). "triton" runs them in one launch (`fused.<cell>_directions`, with the launch
    overrides `config`), "aten" (traced or vmapped only) in one opaque op; the reference runs its
    one-direction layer in turn and concatenates."""
    kwargs = cell.layer_kwargs(mode)
    if concrete == "triton":
        from . import fused  # Triton loads only when used
        directions = getattr(fused, cell.fused_directions, None)
        if directions is None:
            raise BackendError(f"backend='triton' has no {cell.torch_name} kernels in this fastrnn "
                               f"(fastrnn.fused.{cell.fused_directions}); use backend='aten' or 'reference'")
        return lambda x, states, weights, lengths: directions(x, *states, weights, lengths=lengths, config=config,
                                                              **kwargs)
    if concrete == "aten":
        def aten_op(x, states, weights, lengths):
            c0 = states[1] if len(states) > 1 else None
            out, h_n, c_n = aten.layer_directions(x, states[0], c0, weights, mode=mode, lengths=lengths)
            return (out, h_n, c_n)[:1 + len(states)]
        return aten_op

    def reference_op(x, states, weights, lengths):
        return _join([cell.layer(x, *(s[d] for s in states), *w, reverse=d == 1, lengths=lengths, **kwargs)
                      for d, w in enumerate(weights)])
    return reference_op


def _join(runs):
    """Per-direction (out, h_n[, c_n]) -> (out concatenated on features, states stacked)."""
    outs, *states = zip(*runs)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
    return (out, *(torch.stack(s) for s in states))
