"""What `torch.jit.script` compiles in place of fastrnn's modules (their `__prepare_scriptable__`).

TorchScript cannot compile fastrnn's forward (backends, custom ops, PackedSequence handling), and
in torch 2.13 it cannot compile torch.nn.RNN / LSTM / GRU either (their overloaded forward scripts to a
module without one). So a module hands TorchScript one of the small twins below: the same
Parameter objects (an optimizer, a state_dict and the scripted module all see one set), the same
attributes, and a forward that runs ATen's RNN call as torch.nn's does, on tensor input (batched,
batch_first or unbatched) with or without hx, after torch.nn's checks of input and hx (ATen's call
reads hx without bounds checks). A PackedSequence is not accepted by the scripted
module. The cells hand TorchScript torch.nn's cell class, which scripts.

Shape letters: T steps, B batch, I input, H hidden, R = proj_size or H, D directions, L layers.
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ["scriptable"]


def _batched(input: Tensor, batch_first: bool, input_size: int, dim_error: list[str]) -> tuple[Tensor, bool]:
    """input [T, B, I], [B, T, I] or unbatched [T, I] -> (batched input, whether it was batched),
    with torch.nn's checks and messages (`dim_error`: the message before and after the dimension)."""
    if input.dim() != 2 and input.dim() != 3:
        raise ValueError(dim_error[0] + str(input.dim()) + dim_error[1])
    if input.size(-1) != input_size:
        raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {input_size}, "
                           f"got {input.size(-1)}")
    if input.dim() == 3:
        return input, True
    return input.unsqueeze(0 if batch_first else 1), False


def _dims(states: list[Tensor], batched: bool):
    """torch.nn's check that hx is 3-D for batched input and 2-D for unbatched."""
    want = 3 if batched else 2
    kind = "batched 3-D" if batched else "unbatched 2-D"
    for h in states:
        if h.dim() != want:
            if len(states) == 1:
                raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {h.dim()}-D tensor")
            raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got "
                               f"({states[0].dim()}-D, {states[1].dim()}-D) tensors")


def _state(hx: Optional[Tensor], batched: bool, shape: list[int], like: Tensor, label: str) -> Tensor:
    """A given state (batched if the input was not), checked against `shape` as torch.nn checks
    it (the kernels read it without bounds checks), or zeros of `shape` like the input."""
    if hx is None:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    h = hx if batched else hx.unsqueeze(1)
    if h.shape != shape:
        want = "(" + ", ".join([str(n) for n in shape]) + ")"
        raise RuntimeError(f"Expected hidden{label} size {want}, got {list(h.shape)}")
    return h


class _Twin(torch.nn.Module):
    """A module's Parameters (the same objects) and constructor attributes."""

    def __init__(self, module):
        super().__init__()
        for name, param in module.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.flat_weights: list[Tensor] = [getattr(self, n) for n in module._flat_weights_names]
        for attr in ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                     "bidirectional", "proj_size"):
            setattr(self, attr, getattr(module, attr))
        self.dropout = float(module.dropout)
        error = module._cell.input_dim_error.replace("{name}", module._get_name())
        self.dim_error = error.split("{dim}")  # before and after the input's dimension
        self.train(module.training)

    def _shape(self, batch: int, width: int) -> list[int]:
        return [self.num_layers * (2 if self.bidirectional else 1), batch, width]


class _ScriptableRNN(_Twin):
    """The twin of a module whose only state is h: the Elman RNN and the GRU."""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        x, batched = _batched(input, self.batch_first, self.input_size, self.dim_error)
        if hx is not None:
            _dims([hx], batched)
        h = _state(hx, batched, self._shape(x.size(0 if self.batch_first else 1), self.hidden_size), x, "")
        args = (self.flat_weights, self.bias, self.num_layers, self.dropout, self.training,
                self.bidirectional, self.batch_first)
        if self.mode == "RNN_TANH":
            out, h_n = torch._VF.rnn_tanh(x, h, *args)
        elif self.mode == "RNN_RELU":
            out, h_n = torch._VF.rnn_relu(x, h, *args)
        else:
            out, h_n = torch._VF.gru(x, h, *args)
        if not batched:
            return out.squeeze(0 if self.batch_first else 1), h_n.squeeze(1)
        return out, h_n


class _ScriptableLSTM(_Twin):
    def forward(self, input: Tensor, hx: Optional[tuple[Tensor, Tensor]] = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x, batched = _batched(input, self.batch_first, self.input_size, self.dim_error)
        B = x.size(0 if self.batch_first else 1)
        R = self.proj_size if self.proj_size > 0 else self.hidden_size
        h0: Optional[Tensor] = None
        c0: Optional[Tensor] = None
        if hx is not None:
            h0, c0 = hx
            _dims([h0, c0], batched)
        h = _state(h0, batched, self._shape(B, R), x, "[0]")
        c = _state(c0, batched, self._shape(B, self.hidden_size), x, "[1]")
        out, h_n, c_n = torch._VF.lstm(x, (h, c), self.flat_weights, self.bias, self.num_layers,
                                       self.dropout, self.training, self.bidirectional, self.batch_first)
        if not batched:
            return out.squeeze(0 if self.batch_first else 1), (h_n.squeeze(1), c_n.squeeze(1))
        return out, (h_n, c_n)


def scriptable(module):
    """The twin TorchScript compiles for a fastrnn RNN, LSTM or GRU (see the module docstring)."""
    return (_ScriptableLSTM if module._cell.has_c else _ScriptableRNN)(module)
