"""torch's wording for the errors fastrnn raises before a backend could fail differently."""
import torch


def scalar_name(dtype):
    """torch's own name of a dtype in its error messages: 'Float', 'Long', 'BFloat16', ..."""
    return torch.empty(0, dtype=dtype).type().removeprefix("torch.").removesuffix("Tensor")


def dtype_mismatch(kind, got, want):
    """The RuntimeError torch raises when two operands of a matmul differ in dtype."""
    return RuntimeError(f"{kind} must have the same dtype, but got {scalar_name(got)} and {scalar_name(want)}")
