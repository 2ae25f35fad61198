"""Which implementation runs a recurrence.

The backend is an explicit argument that travels with every call; nothing here swaps symbols at
import time. `"auto"` resolves per call from the tensors at hand (and `FASTRNN_BACKEND`, read at
call time, when set). A backend that was asked for by name and cannot run a case raises.
"""
import importlib.util
import os

import torch

BACKENDS = ("auto", "reference", "triton", "aten")
_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class BackendError(RuntimeError):
    """A backend was asked for by name and cannot run this case."""


def check_backend_name(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def triton_available():
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve(backend, x, check=True):
    """The concrete backend for a call on tensor `x`: 'reference', 'triton' or 'aten'.
    With `check`, raise BackendError when that is 'triton' and it cannot run `x`."""
    check_backend_name(backend)
    if backend == "auto":
        env = os.environ.get("FASTRNN_BACKEND", "").strip()
        if env and env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"FASTRNN_BACKEND must be one of {BACKENDS}, got {env!r}")
            backend = env
        elif x.is_cuda and x.dtype in _FUSED_DTYPES and triton_available():
            return "triton"
        elif x.device.type == "cpu":
            return "aten"  # torch's own fused CPU loops: the fastest correct CPU path we measured
        else:
            return "reference"
    if backend == "triton" and check:
        check_triton(x)
    return backend


def runs_on_aten(backend, x):
    """Does a module call on `x` resolve to 'aten'? The modules then run torch.nn's own forward.
    Asked before the module's input checks, so it raises nothing a backend would: bad input gets
    torch's error first, and the backend's own check comes when it runs."""
    return isinstance(x, torch.Tensor) and resolve(backend, x, check=False) == "aten"


def check_triton(x):
    """Raise BackendError unless the Triton kernels can run on `x`."""
    if not triton_available():
        raise BackendError("backend='triton' needs the triton package; install it or use backend='reference'")
    if x.dtype not in _FUSED_DTYPES:
        raise BackendError(
            f"backend='triton' runs float32, float16 and bfloat16, got {x.dtype}; "
            "use backend='reference' for other dtypes")
    if x.device.type == "cpu" and not interpreter_enabled():
        raise BackendError(
            "backend='triton' on CPU tensors runs Triton's interpreter, which must be enabled with "
            "TRITON_INTERPRET=1 before fastrnn is imported; use backend='aten' or 'reference' on CPU")
    if x.device.type not in ("cuda", "cpu"):
        raise BackendError(f"backend='triton' runs on CUDA (or CPU under the interpreter), got {x.device}")
