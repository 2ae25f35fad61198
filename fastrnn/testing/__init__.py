"""Tools for proving an RNN implementation equal to the float64 reference."""
from .compare import assert_close, tolerances

__all__ = ["assert_close", "tolerances"]
