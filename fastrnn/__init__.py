"""fastrnn: fused Triton kernels for the Elman RNN and LSTM, as a drop-in for torch.nn."""
from . import reference
from .backends import BACKENDS, BackendError
from .functional import rnn_stack

__version__ = "0.1.0"
