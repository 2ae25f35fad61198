"""Drop-in `torch.nn.RNN`, `torch.nn.LSTM` and `torch.nn.GRU` whose forward runs through `rnn_stack`.

Each class subclasses `torch.nn.RNNBase`, so construction (argument checks and their messages),
parameters (names, shapes, order, initialisation), `state_dict`, `all_weights`, `_flat_weights`,
`reset_parameters`, `.to()` and pickling are torch's, and `isinstance(m, torch.nn.RNNBase)` holds.
They are not subclasses of `torch.nn.RNN` / `LSTM` / `GRU`: Dynamo refuses every instance of
those (`torch._dynamo.config.allow_rnn`), and fastrnn's modules must compile with
`fullgraph=True` without a global switch that would also change how torch.nn's own RNNs compile.
What the classes add: `forward` (torch's checks and messages, then `fastrnn.functional.rnn_stack`
on the "reference" or "triton" backend; on "aten", the CPU default, torch.nn's own forward after
the packed-input checks torch's LSTM skips), a keyword-only `backend` argument, a
`flatten_parameters()` that does nothing (there is no cuDNN weight buffer to compact, so no warning
either), and a repr that does not hide `nonlinearity='relu'`.

What differs between the cells (their states, gates, projection, messages) is read from their
description, `self._cell` (fastrnn/cellspec.py).

Shape letters: T time steps, B batch, I input size, H hidden size, R = proj_size or H,
D = 2 if bidirectional else 1, L = num_layers.
"""
import torch
from torch.nn.utils.rnn import PackedSequence

from . import aten, autotune, backends, cellspec, packing, scripting
from .backends import autocast_active, check_backend_name, runs_on_aten
from .errors import dtype_mismatch
from .functional import autocast_result_dtype, check_weights, rnn_stack

__all__ = ["RNN", "LSTM", "GRU"]


class _StackMixin:
    """forward / repr / flatten_parameters shared by RNN, LSTM and GRU; sits before torch's class
    in the MRO so its methods win while torch's __init__ and helpers stay in use."""

    @property
    def _cell(self):
        """This module's CellSpec, from torch's `mode`."""
        return cellspec.of(self.mode)

    def flatten_parameters(self):
        """A no-op: fastrnn reads the parameters where they are (no cuDNN flat buffer)."""

    def __setstate__(self, state):
        super().__setstate__(state)
        # Modules pickled before `backend` existed (or converted objects) still load.
        self.__dict__.setdefault("backend", "auto")

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles instead of this module (fastrnn/scripting.py): a twin
        with the same Parameters whose forward runs ATen's RNN call on tensor input."""
        return scripting.scriptable(self)

    def extra_repr(self):
        s = super().extra_repr()
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            # torch's RNN repr drops nonlinearity, so a relu RNN printed like a tanh one.
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    # --- weights ----------------------------------------------------------------------------
    def _layer_weights(self):
        """One tuple per layer and direction in torch's order, read by name, so that
        `torch.func.functional_call` and reparametrisations see their substituted tensors:
        (w_ih, w_hh, b_ih, b_hh), and w_hr after them for a cell that projects (the LSTM); None
        where absent."""
        out = []
        projects = self._cell.projects
        for names in self._all_weights:  # [w_ih, w_hh, b_ih, b_hh (if bias), w_hr (if projecting)]
            w_ih, w_hh, *rest = (getattr(self, name) for name in names)
            biases = (rest[0], rest[1]) if self.bias else (None, None)
            w_hr = (rest[-1] if self.proj_size > 0 else None,) if projects else ()
            out.append((w_ih, w_hh, *biases, *w_hr))
        return out

    def _check_weights(self, data, weights, batch=None):
        """functional.check_weights on `weights` (_layer_weights) for input `data` (a tensor or
        packed data, features last) of `batch` sequences (read from `data` when None). Input that
        is not 2-D or 3-D is left to torch's own error."""
        if data.dim() not in (2, 3):
            return
        if batch is None:
            batch = data.size(0 if self.batch_first else 1) if data.dim() == 3 else 1
        check_weights(data, weights, gates=self._cell.gates,
                      hidden_size=self.hidden_size, recurrent_size=self.proj_size or self.hidden_size,
                      bidirectional=self.bidirectional, batch=batch, input_size=self.input_size,
                      dtype=weights[0][0].dtype)

    # --- hidden state -----------------------------------------------------------------------
    def _state_shapes(self, batch):
        """The shape of each state of hx for a batch of B: h [L*D, B, R] (and c [L*D, B, H])."""
        LD = self.num_layers * (2 if self.bidirectional else 1)
        width = {"h": self.proj_size if self.proj_size > 0 else self.hidden_size, "c": self.hidden_size}
        return tuple((LD, batch, width[state]) for state in self._cell.states)

    def _zero_hx(self, x, batch):
        """Zero hx (h0, or (h0, c0) for LSTM), shaped by _state_shapes, in x's dtype/device."""
        return self._cell.hx([torch.zeros(shape, dtype=x.dtype, device=x.device)
                              for shape in self._state_shapes(batch)])

    def _check_hx_dims(self, hx, is_batched):
        """torch's dimension checks on a user-given hx; returns it batched ([L*D, B, .])."""
        want = 3 if is_batched else 2
        kind = "batched 3-D" if is_batched else "unbatched 2-D"
        if self._cell.has_c:
            if len(hx) != 2:
                raise RuntimeError("lstm expects two hidden states")
            if hx[0].dim() != want or hx[1].dim() != want:
                raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
        elif hx.dim() != want:
            raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {hx.dim()}-D tensor")
        states = self._cell.states_of(hx)
        return self._cell.hx(states if is_batched else [h.unsqueeze(1) for h in states])

    def _check_hx_dtype(self, x, hx):
        # torch fails inside its matmul; we say it before any backend could silently cast.
        if autocast_active(x.device.type):
            return
        for h in self._cell.states_of(hx):
            if h.dtype != x.dtype:
                raise dtype_mismatch("mat1 and mat2", h.dtype, x.dtype)

    def _permute(self, hx, permutation):
        if permutation is None:
            return hx
        return self._cell.hx([h.index_select(1, permutation) for h in self._cell.states_of(hx)])

    # --- forward ----------------------------------------------------------------------------
    def _signature(self, input, states, weights):
        """The autotune Signature of a call (fastrnn/autotune.py), from this module's sizes and the
        input's T and B: what "auto" decides by on CUDA, asked before torch's checks and handed down
        to rnn_stack. None off CUDA, and for input of a form torch refuses (its error comes later)."""
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        if not isinstance(data, torch.Tensor) or data.dim() not in ((2,) if packed else (2, 3)) \
                or not backends.tunes_by_signature(data):
            return None
        if packed:
            T, B = input.batch_sizes.shape[0], packing.packed_batch(input)
        elif data.dim() == 3:
            T, B = (data.shape[1], data.shape[0]) if self.batch_first else (data.shape[0], data.shape[1])
        else:
            T, B = data.shape[0], 1
        device_type = data.device.type
        dtype = torch.get_autocast_dtype(device_type) if autocast_active(device_type) else data.dtype
        tensors = (data, *states, *(w for ws in weights for w in ws))
        training = torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)
        return autotune.signature(self.mode, T=T, B=B, I=self.input_size, H=self.hidden_size,
                                  R=self.proj_size or self.hidden_size, layers=self.num_layers,
                                  bidirectional=self.bidirectional, dtype=dtype, training=training, lengths=packed)

    def _run(self, x, hx, weights, lengths=None, signature=None):
        """x: [T, B, I] time-major, weights: _layer_weights() -> (out [T, B, D*R], h_n or (h_n, c_n)).
        `signature`: the one "auto" was decided by (`_signature`)."""
        if x.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        self._check_hx_dtype(x, hx)
        out, hidden = rnn_stack(x, hx, weights, mode=self.mode, num_layers=self.num_layers,
                                bidirectional=self.bidirectional, dropout=self.dropout,
                                training=self.training, lengths=lengths, backend=self.backend, signature=signature)
        dtype = autocast_result_dtype(self._cell, "layer", x.device.type, self._cell.states_of(hx))
        if dtype is not None:  # torch.nn's GRU under CPU autocast (see there)
            out, hidden = out.to(dtype), self._cell.hx([h.to(dtype) for h in self._cell.states_of(hidden)])
        return out, hidden

    def forward(self, input, hx=None):
        """input: [T, B, I] ([B, T, I] if batch_first), unbatched [T, I], or a PackedSequence;
        hx: h0 [L*D, B, R] (RNN, GRU) or (h0 [L*D, B, R], c0 [L*D, B, H]) (LSTM), 2-D when unbatched.

        Returns (output, h_n) for RNN and GRU and (output, (h_n, c_n)) for LSTM, shaped like
        torch.nn's: output [T, B, D*R] (batch-first / unbatched / packed as the input was).
        """
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        weights = self._layer_weights()  # read once per call, functional_call's substitutes included
        states = (hx if isinstance(hx, (tuple, list)) else (hx,)) if hx is not None else ()
        signature = self._signature(input, states, weights)
        if runs_on_aten(self.backend, data, mode=self.mode, signature=signature) and not aten.traced(
                data, *states, *(w for ws in weights for w in ws)):
            # torch.nn's own forward on ATen's fused loops is the fastest correct CPU path we
            # measured (README, Benchmarks): run it as is, after the checks torch's LSTM skips.
            # Traced or vmapped, it cannot run as is; rnn_stack runs its calls as an opaque op.
            self._check_weights(data, weights, self._check_packed(input, hx) if packed else None)
            return self._torch_class.forward(self, input, hx)
        self._update_flat_weights()  # torch's input checks below read _flat_weights
        if packed:
            return self._forward_packed(input, hx, weights, signature)
        if input.dim() not in (2, 3):
            raise ValueError(self._cell.input_dim_error.format(name=self._get_name(), dim=input.dim()))
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        hx = self._zero_hx(input, input.size(batch_dim)) if hx is None else self._check_hx_dims(hx, is_batched)
        self.check_forward_args(input, hx, None)
        x = input.transpose(0, 1) if self.batch_first else input
        output, hidden = self._run(x, hx, weights, signature=signature)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hidden = self._cell.hx([h.squeeze(1) for h in self._cell.states_of(hidden)])
        return output, hidden

    def _check_packed(self, packed, hx):
        """torch's checks of packed input and hx (torch's LSTM skips them and computes garbage),
        with the batch size read without a data-dependent int where it can be (packing.py).
        Returns that batch size B."""
        self.check_input(packed.data, packed.batch_sizes)
        B = packing.packed_batch(packed)
        if hx is None:
            return B
        if self._cell.has_c and len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
        states, shapes = self._cell.states_of(hx), self._state_shapes(B)
        labels = [f"[{k}]" for k in range(len(states))] if len(states) > 1 else [""]
        for h, shape, label in zip(states, shapes, labels):
            self.check_hidden_size(h, shape, f"Expected hidden{label} size {{}}, got {{}}")
        return B

    def _forward_packed(self, packed, hx, weights, signature=None):
        """Pad in sorted order, run with per-sequence lengths, re-pack into the input's layout;
        hx is read, and h_n returned, in the user's batch order. Shapes never depend on values
        when the PackedSequence has sorted_indices, so this compiles with fullgraph=True."""
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        B = self._check_packed(packed, hx)
        hx = self._zero_hx(data, B) if hx is None else self._permute(hx, sorted_indices)
        padded, lengths, slots = packing.pad(data, batch_sizes, B)
        output, hidden = self._run(padded, hx, weights, lengths, signature)
        output = PackedSequence(packing.pack(output, slots), batch_sizes, sorted_indices, unsorted_indices)
        return output, self._permute(hidden, unsorted_indices)


def _refuse_projection(kwargs):
    """torch.nn.RNN's and GRU's check, before RNNBase's (which would take proj_size)."""
    if "proj_size" in kwargs:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")


class RNN(_StackMixin, torch.nn.RNNBase):
    """torch.nn.RNN (Elman, tanh or relu) with fastrnn's forward.

    RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False,
        dropout=0.0, bidirectional=False, device=None, dtype=None, *, backend='auto')
    """

    _torch_class = torch.nn.RNN  # whose forward the "aten" backend runs

    def __init__(self, *args, backend="auto", **kwargs):
        # torch.nn.RNN's argument handling: `nonlinearity` is the fourth positional argument and
        # picks the mode; RNNBase checks the rest.
        check_backend_name(backend)
        _refuse_projection(kwargs)
        args = list(args)
        nonlinearity = args.pop(3) if len(args) > 3 else kwargs.pop("nonlinearity", "tanh")
        if nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)
        self.nonlinearity = nonlinearity
        self.backend = backend


class LSTM(_StackMixin, torch.nn.RNNBase):
    """torch.nn.LSTM with fastrnn's forward.

    LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
         bidirectional=False, proj_size=0, device=None, dtype=None, *, backend='auto')
    """

    _torch_class = torch.nn.LSTM
    # The (h, c) checks torch.nn.LSTM adds to RNNBase, taken as they are.
    get_expected_cell_size = torch.nn.LSTM.get_expected_cell_size
    check_forward_args = torch.nn.LSTM.check_forward_args
    permute_hidden = torch.nn.LSTM.permute_hidden

    def __init__(self, *args, backend="auto", **kwargs):
        check_backend_name(backend)
        super().__init__("LSTM", *args, **kwargs)
        self.backend = backend


class GRU(_StackMixin, torch.nn.RNNBase):
    """torch.nn.GRU with fastrnn's forward.

    GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, device=None, dtype=None, *, backend='auto')
    """

    _torch_class = torch.nn.GRU

    def __init__(self, *args, backend="auto", **kwargs):
        check_backend_name(backend)
        _refuse_projection(kwargs)
        super().__init__("GRU", *args, **kwargs)
        self.backend = backend
