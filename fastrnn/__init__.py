"""fastrnn: fused Triton kernels for the Elman RNN and LSTM, as a drop-in for torch.nn."""
from . import reference
from .backends import BACKENDS, BackendError
from .cells import LSTMCell, RNNCell
from .convert import convert, to_torch
from .functional import rnn_stack
from .modules import LSTM, RNN

__version__ = "0.1.0"

__all__ = ["BACKENDS", "LSTM", "RNN", "BackendError", "LSTMCell", "RNNCell", "convert", "reference",
           "rnn_stack", "to_torch"]
