"""Swap torch.nn's recurrent modules in a model for fastrnn's, in place, and back.

The swap changes only each module's class (and its `backend` attribute): the object, its
Parameters, their device, dtype and gradients, its training flag and any hooks stay. An
optimizer built before `convert` therefore keeps training the same tensors.
"""
import torch

from .backends import check_backend_name
from .cells import GRUCell, LSTMCell, RNNCell
from .modules import GRU, LSTM, RNN

__all__ = ["convert", "to_torch"]

_TO_FAST = {torch.nn.RNN: RNN, torch.nn.LSTM: LSTM, torch.nn.GRU: GRU, torch.nn.RNNCell: RNNCell,
            torch.nn.LSTMCell: LSTMCell, torch.nn.GRUCell: GRUCell}
_TO_TORCH = {fast: torch_cls for torch_cls, fast in _TO_FAST.items()}


def convert(model, backend="auto"):
    """Make every torch.nn.RNN / LSTM / GRU / RNNCell / LSTMCell / GRUCell in `model` (the model itself included)
    a fastrnn module running on `backend`; returns `model`.

    Only those exact classes are swapped: a user's subclass may override forward, so it is left
    alone. Modules that already are fastrnn's are set to `backend` too.
    """
    check_backend_name(backend)
    for module in model.modules():
        fast = _TO_FAST.get(type(module))
        if fast is not None:
            module.__class__ = fast
        if type(module) in _TO_TORCH:
            module.backend = backend
    return model


def to_torch(model):
    """Undo `convert`: every fastrnn RNN / LSTM / GRU / RNNCell / LSTMCell / GRUCell in `model` becomes the
    torch.nn class again (same object, same Parameters); returns `model`."""
    for module in model.modules():
        torch_cls = _TO_TORCH.get(type(module))
        if torch_cls is not None:
            module.__class__ = torch_cls
            module.__dict__.pop("backend", None)
    return model
