"""Drop-in `torch.nn.RNNCell`, `LSTMCell` and `GRUCell` that run one step through `rnn_stack`.

A cell is a one-step, one-layer recurrence, so it goes through the same path as the modules
(T = 1), and a backend's forward kernel serves cells too (the cell's `fused.<cell>_directions` on
"triton", reached through rnn_stack); on the "aten" backend (the CPU default) a cell runs torch.nn's
own forward. Construction, parameters and repr are
torch's (the classes subclass torch's); forward repeats torch's checks with torch's messages.

Shape letters: B batch, I input size, H hidden size.
"""
import copy

import torch

from . import aten, autotune, backends, cellspec
from .backends import autocast_active, check_backend_name, runs_on_aten
from .errors import dtype_mismatch
from .functional import autocast_result_dtype, check_weights, rnn_stack

__all__ = ["RNNCell", "LSTMCell", "GRUCell"]


class _CellMixin:
    """Checks and the one-step run shared by the cells; precedes torch's class in the MRO."""

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("backend", "auto")

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles instead of this cell (TorchScript cannot compile fastrnn's
        forward): torch.nn's class on a shallow copy, so the same Parameters and torch's forward."""
        twin = copy.copy(self)
        twin.__class__ = self._torch_class
        del twin.backend
        return twin

    def extra_repr(self):
        s = super().extra_repr()
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _check_state(self, x, h, label):
        """x: [B, I], h: [B, H] (both batched by now); torch's batch, size and dtype checks."""
        if x.size(0) != h.size(0):
            raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{label} batch size {h.size(0)}")
        if h.size(1) != self.hidden_size:
            raise RuntimeError(f"hidden{label} has inconsistent hidden_size: got {h.size(1)}, "
                               f"expected {self.hidden_size}")

    def _check_dtypes(self, *tensors):
        # torch fails inside its matmul with this message; we say it before any backend could cast.
        if autocast_active(tensors[0].device.type):
            return
        want = self.weight_ih.dtype
        for t in tensors:
            if t.dtype != want:
                raise dtype_mismatch("mat1 and mat2", t.dtype, want)

    def _signature(self, input, hx):
        """The autotune Signature of a call (fastrnn/autotune.py): one step of torch.nn's cell class
        at this batch size, what "auto" decides by on CUDA, asked before torch's checks and handed
        down to rnn_stack. None off CUDA, and for input torch refuses (its error comes later)."""
        if not isinstance(input, torch.Tensor) or input.dim() not in (1, 2) or not backends.tunes_by_signature(input):
            return None
        spec = cellspec.of(self._torch_class.__name__)
        mode = ({"tanh": "RNN_TANH", "relu": "RNN_RELU"}.get(self.nonlinearity) if spec is cellspec.ELMAN
                else next(iter(spec.modes)))
        if mode is None:
            return None
        states = hx if isinstance(hx, (tuple, list)) else (hx,)
        device_type = input.device.type
        dtype = torch.get_autocast_dtype(device_type) if autocast_active(device_type) else input.dtype
        training = torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad for t in (input, *states, *self.parameters()))
        return autotune.signature(mode, T=1, B=input.shape[0] if input.dim() == 2 else 1, I=self.input_size,
                                  H=self.hidden_size, dtype=dtype, training=training, cell=True)

    def _runs_torch_forward(self, input, hx, mode, signature=None):
        """On "aten", torch.nn's own cell runs (the fastest on CPU), except when vmapped or traced:
        torch's cell ops have no batching rule, so the cell then goes through rnn_stack, which
        runs them as an opaque op (fastrnn/aten.py). `signature`: `_signature`'s, on CUDA."""
        states = hx if isinstance(hx, (tuple, list)) else (hx,)
        return runs_on_aten(self.backend, input, mode=mode, signature=signature) and not aten.traced(
            input, *states, *self.parameters())

    def _batch_input(self, input):
        if input.dim() not in (1, 2):
            raise ValueError(f"{self._get_name()}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        is_batched = input.dim() == 2
        return (input if is_batched else input.unsqueeze(0)), is_batched

    def _check_input(self, x):
        if x.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} expected {self.input_size}")

    def _step(self, mode, x, hx, weights, signature=None):
        """x: [B, I], hx: h [1, B, H] or (h, c) -> rnn_stack over T=1, one layer: returns the new
        states, h [B, H] or (h, c). Under autocast rnn_stack runs in the autocast dtype, as torch's
        cells do their GEMMs, and the states come back in the dtype torch's cell returns."""
        cell = cellspec.of(mode)
        check_weights(x, [weights], gates=cell.gates, hidden_size=self.hidden_size,
                      recurrent_size=self.hidden_size, bidirectional=False, batch=x.shape[0],
                      names=lambda layer, d, kind: kind)
        _, hidden = rnn_stack(x[None], hx, [weights], mode=mode, num_layers=1, bidirectional=False,
                              backend=self.backend, signature=signature)
        dtype = autocast_result_dtype(cell, "cell", x.device.type, cell.states_of(hx))
        return cell.hx([h[0] if dtype is None else h[0].to(dtype) for h in cell.states_of(hidden)])

    def _one_state_forward(self, input, hx, signature=None):
        """forward of a cell whose only state is h (RNNCell, GRUCell), after torch's checks in
        torch's order; `self._mode()` is the rnn_stack mode it runs."""
        x, is_batched = self._batch_input(input)
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"{self._get_name()}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        if hx is None:
            hx = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
        elif not is_batched:
            hx = hx.unsqueeze(0)
        mode = self._mode()
        self._check_input(x)
        self._check_state(x, hx, 0)
        self._check_dtypes(x, hx)
        weights = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        h = self._step(mode, x, hx[None], weights, signature)
        return h if is_batched else h.squeeze(0)


class RNNCell(_CellMixin, torch.nn.RNNCell):
    """torch.nn.RNNCell with fastrnn's forward.

    RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh', device=None, dtype=None,
            *, backend='auto')
    """

    _torch_class = torch.nn.RNNCell

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None, *, backend="auto"):
        check_backend_name(backend)
        super().__init__(input_size, hidden_size, bias, nonlinearity, device, dtype)
        self.backend = backend

    def forward(self, input, hx=None):
        """input: [B, I] or [I]; hx: [B, H] or [H] (zeros when None) -> h': [B, H] or [H]."""
        signature = self._signature(input, hx)
        if self._runs_torch_forward(input, hx, "RNNCell", signature):
            return super().forward(input, hx)
        return self._one_state_forward(input, hx, signature)

    def _mode(self):
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"


class LSTMCell(_CellMixin, torch.nn.LSTMCell):
    """torch.nn.LSTMCell with fastrnn's forward.

    LSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None, *, backend='auto')
    """

    _torch_class = torch.nn.LSTMCell

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 backend="auto"):
        check_backend_name(backend)
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.backend = backend

    def forward(self, input, hx=None):
        """input: [B, I] or [I]; hx: (h [B, H], c [B, H]) or 1-D each (zeros when None)
        -> (h' [B, H], c' [B, H]), 1-D when the input was."""
        signature = self._signature(input, hx)
        if self._runs_torch_forward(input, hx, "LSTMCell", signature):
            return super().forward(input, hx)
        x, is_batched = self._batch_input(input)
        if isinstance(hx, torch.Tensor):  # torch's binding refuses it; iterating would split it
            raise TypeError("lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not Tensor")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
            if len(hx) != 2:
                raise RuntimeError("lstm_cell expects two hidden states")
            h0, c0 = hx if is_batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        else:
            h0 = c0 = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
        self._check_input(x)
        self._check_state(x, h0, 0)
        self._check_state(x, c0, 1)
        self._check_dtypes(x, h0)  # torch promotes a c of another dtype, and so does the reference
        weights = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None)
        h, c = self._step("LSTM", x, (h0[None], c0[None]), weights, signature)
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_CellMixin, torch.nn.GRUCell):
    """torch.nn.GRUCell with fastrnn's forward.

    GRUCell(input_size, hidden_size, bias=True, device=None, dtype=None, *, backend='auto')
    """

    _torch_class = torch.nn.GRUCell

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 backend="auto"):
        check_backend_name(backend)
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.backend = backend

    def forward(self, input, hx=None):
        """input: [B, I] or [I]; hx: [B, H] or [H] (zeros when None) -> h': [B, H] or [H]."""
        signature = self._signature(input, hx)
        if self._runs_torch_forward(input, hx, "GRUCell", signature):
            return super().forward(input, hx)
        return self._one_state_forward(input, hx, signature)

    def _mode(self):
        return "GRU"
