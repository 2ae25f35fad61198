"""Which implementation runs a recurrence.

The backend is an explicit argument that travels with every call; nothing here swaps symbols at
import time. `"auto"` resolves per call from the tensors at hand (and `FASTRNN_BACKEND`, read at
call time, when set). A backend that was asked for by name and cannot run a case raises.

On CPU `"auto"` means torch's own kernels ("aten") where they run, and the reference where they do
not: whether they run depends on the CPU, not only on the case. torch.nn.LSTM under CPU bf16 or
fp16 autocast raises inside oneDNN on a CPU without AVX-512 ("could not create a primitive
descriptor for the LSTM forward propagation primitive"), while the same call works on an AVX-512
machine. So `aten_runs` asks torch itself, once per (mode, dtype, autocast dtype, grad mode): it
runs the op on tiny CPU tensors and records whether it raises.

On CUDA `"auto"` is decided per call signature (fastrnn/autotune.py): torch.nn's own path
("aten") or "triton" with a launch strategy, whichever was fastest among those that agree with
torch.nn on this GPU. `choose` returns that pair; the caller passes the signature (a module builds
it from its own sizes before its checks and hands the same one down to rnn_stack, so both decide
alike). Without a signature, "auto" on CUDA is "triton" with its heuristic strategy.
"""
import importlib.util
import os

import torch

from . import cellspec

BACKENDS = ("auto", "reference", "triton", "aten")
_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# What `mode` names: torch.nn's RNNBase modes, then the cells (torch.nn's class names).
LAYER_MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
CELL_MODES = ("RNNCell", "LSTMCell", "GRUCell")
MODES = LAYER_MODES + CELL_MODES


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


def resolve(backend, x, check=True, mode=None, signature=None):
    """The concrete backend for a call on tensor `x`: 'reference', 'triton' or 'aten'.

    `mode` (one of MODES) is the recurrence about to run; "auto" on CPU picks 'aten' only when
    torch's op for it runs here (`aten_runs`), and without a mode only when every mode's does;
    on meta tensors it picks 'aten', whose torch.nn forward gives meta outputs; on CUDA see
    `choose`, whose first half this is.
    With `check`, raise BackendError when the result is 'triton' and it cannot run `x`."""
    return choose(backend, x, check=check, mode=mode, signature=signature)[0]


def choose(backend, x, check=True, mode=None, signature=None):
    """(concrete backend, triton launch strategy or None) for a call on `x`: `resolve`'s backend,
    and on CUDA, when "auto" has the call's `signature` (fastrnn.autotune.Signature, or None),
    auto's decision for it (fastrnn.autotune.decide): 'aten' or 'triton' with a strategy."""
    check_backend_name(backend)
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if backend == "auto":
        env = os.environ.get("FASTRNN_BACKEND", "").strip()
        if env and env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"FASTRNN_BACKEND must be one of {BACKENDS}, got {env!r}")
            backend = env
        elif x.dtype in _FUSED_DTYPES and tunes_by_signature(x) and triton_available():
            if signature is None:
                return "triton", None
            from . import autotune
            return tuple(autotune.decide(signature, x.device))
        elif x.is_meta:
            return "aten", None  # torch.nn's own forward gives meta outputs, as torch.nn.LSTM does
        elif x.is_cpu:
            # torch's own fused CPU loops, the fastest correct CPU path we measured, where they run
            autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
            return ("aten" if aten_runs(mode, x.dtype, autocast) else "reference"), None
        else:
            return "reference", None
    if backend == "triton" and check:
        check_triton(x)
    return backend, None


def tunes_by_signature(x):
    """Does "auto" decide per call signature on `x`'s device? On CUDA (the tests send CPU tensors
    down this path by replacing this predicate)."""
    return x.is_cuda


def autocast_active(device_type):
    """Is autocast on for `device_type`? False where autocast does not exist (meta, for one), where
    torch.is_autocast_enabled itself raises."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def runs_on_aten(backend, x, mode=None, signature=None):
    """Does a module call on `x` resolve to 'aten'? The modules then run torch.nn's own forward.
    `mode` and `signature` as in `choose`. Asked before the module's input checks, so it raises
    nothing a backend would: bad input gets torch's error first, and the backend's own check comes
    when it runs."""
    return isinstance(x, torch.Tensor) and resolve(backend, x, check=False, mode=mode, signature=signature) == "aten"


_PROBED = {}  # (mode, dtype, autocast dtype, grad enabled, mkldnn enabled) -> None or torch's error
_RUNS = {}    # the same keys, mode None included -> bool: one lookup per call once known


def aten_runs(mode, dtype, autocast_dtype=None):
    """Does torch's own CPU op for `mode` (None: for every one of MODES) run `dtype` tensors here,
    under CPU autocast to `autocast_dtype` (None: autocast off), in the current grad mode?

    Answered by running it (`aten_probe`), once per process and case. While torch.compile traces
    nothing can run, so the answer there is yes. Non-floating dtypes are a yes too: torch.nn then
    raises its own error for them, which is the error the user should get."""
    if torch.compiler.is_compiling():
        return True
    key = (mode, dtype, autocast_dtype, torch.is_grad_enabled(), torch.backends.mkldnn.enabled)
    runs = _RUNS.get(key)
    if runs is None:
        modes = MODES if mode is None else (mode,)
        runs = not dtype.is_floating_point or all(aten_probe(m, dtype, autocast_dtype) is None for m in modes)
        _RUNS[key] = runs
    return runs


def aten_probe(mode, dtype, autocast_dtype=None):
    """None if torch's CPU op for `mode` runs on tiny `dtype` tensors (under CPU autocast to
    `autocast_dtype` unless None), else the text of the error it raised. Cached per case."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    key = (mode, dtype, autocast_dtype, torch.is_grad_enabled(), torch.backends.mkldnn.enabled)
    if key not in _PROBED:
        try:
            _run_tiny(mode, dtype, autocast_dtype, grad=key[3])
            _PROBED[key] = None
        except RuntimeError as err:  # oneDNN's refusals are RuntimeErrors; anything else is a bug
            _PROBED[key] = str(err)
    return _PROBED[key]


def _run_tiny(mode, dtype, autocast_dtype, grad):
    """torch's op for `mode` on [T=2, B=1, I=H=2] CPU tensors, in training and inference, and its
    backward when grad mode is on (oneDNN has separate primitives for each). Raises what it raises."""
    from torch.utils._python_dispatch import _disable_current_modes

    def full(*shape):
        return torch.full(shape, 0.1, dtype=dtype, device="cpu", requires_grad=grad)  # whatever the default device

    cell = cellspec.of(mode)
    G = cell.gates
    with _disable_current_modes(), torch.autocast(
            "cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        params = [full(G * 2, 2), full(G * 2, 2), full(G * 2), full(G * 2)]
        if mode in CELL_MODES:
            x, hx = full(1, 2), cell.hx([full(1, 2) for _ in cell.states])
            outs = list(cell.states_of(cellspec.vf(cell.cell_vf)(x, hx, *params)))
        else:
            x, hx = full(2, 1, 2), cell.hx([full(1, 1, 2) for _ in cell.states])
            fn = cellspec.vf(cell.modes[mode])
            outs = [fn(x, hx, params, True, 1, 0.0, train, False, False)[0] for train in (True, False)]
        if grad:
            torch.autograd.grad([o.float().sum() for o in outs], [x, *params], allow_unused=True)


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
    if x.device.type not in ("cuda", "cpu", "meta"):
        # meta: the custom ops' fake implementations give meta outputs, as torch.nn's modules do
        raise BackendError(f"backend='triton' runs on CUDA (or CPU under the interpreter), got {x.device}")
