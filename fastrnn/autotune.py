"""`backend="auto"` on CUDA: per call signature, the fastest implementation that agrees with torch.nn.

A signature (`Signature`) is what decides speed: cell and mode, layers, directions, B, I, H, R,
dtype (and which of cuDNN's and matmul's TF32 flags fp32 has on), whether a backward follows,
whether sequences have lengths, and T rounded up to a power of two. Its candidates are
torch.nn's own path ("aten": cuDNN, or torch's fused cell for the cells) and the triton backend
under each launch strategy (kernels/config.py STRATEGIES; only the one FASTRNN_TRITON_STRATEGY
names when it is set).

The first time a signature is seen (`decide`), every candidate runs once on random inputs of the
call's shapes (T capped at T_CAP) and its results (outputs, final states, and with a backward the
gradients of x, the states and every weight) are compared with torch.nn's within twice the
oracle's tolerance for the dtype and T (fastrnn.testing.tolerances: each side may be that far from
the exact result). Only candidates that agree are timed; the fastest wins, and candidates within
TIE of the fastest count as tied, won by the earlier of CANDIDATE order (torch.nn first), so the
same times always give the same choice. A candidate that disagrees, or raises anything but the
BackendError / ValueError with which fastrnn refuses a case it cannot launch (a 'split' grid that
cannot be co-resident), is excluded with one warning per signature. The decision is kept in
memory and on disk (fastrnn/tunecache.py).

Measuring never happens while torch.compile or torch.export traces: a decision held in memory or
in the cache file is used (read outside the trace), else the static rule (`static_choice`).
FASTRNN_AUTOTUNE=0 turns measuring and the cache off: the static rule alone decides, the same on
every machine.
"""
import contextlib
import inspect
import math
import os
import statistics
import threading
import warnings
from typing import NamedTuple

import torch

from . import cellspec

ENV = "FASTRNN_AUTOTUNE"
STRATEGY_ENV = "FASTRNN_TRITON_STRATEGY"  # kernels/config.py ENV (read here without importing Triton)
STRATEGIES = ("rows", "split", "stepwise")  # kernels/config.py STRATEGIES, in tie-break order
T_CAP = 256     # steps a measurement runs at most: enough for the per-step cost to dominate
TIE = 0.01      # relative: times this close to the fastest count as equal
REPEATS = 10    # timed calls per candidate (their median)
_DTYPES = ("float32", "float16", "bfloat16")


class AutotuneWarning(UserWarning):
    """A candidate of backend='auto' raised or disagreed with torch.nn and was excluded."""


class Signature(NamedTuple):
    """What auto decides by. mode: rnn_stack's ('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU'); cell: a
    torch.nn cell class (one step; its aten candidate is torch's cell op, not a layer); T: steps
    rounded up to a power of two; tf32: which of torch's TF32 flags allow it in an fp32 call, ''
    (neither, and never for fp16 / bf16), 'cudnn' (cuDNN's: the layers' aten candidate), 'matmul'
    (cuBLAS's: the cells' aten candidate and the triton kernels) or 'cudnn+matmul'; training: a
    backward will run; lengths: sequences of their own lengths (packed input)."""
    mode: str
    cell: bool
    layers: int
    directions: int
    T: int
    B: int
    I: int
    H: int
    R: int
    dtype: str
    tf32: str
    training: bool
    lengths: bool

    @property
    def key(self):
        """`LSTM-L1-uni-T64-B16-I256-H256-R256-float16-train`, `GRUCell-...`, `RNNCell_RELU-...`,
        `-tf32cudnn`, `-tf32matmul` or `-tf32` (both), `-packed`. A cell is named by its torch.nn
        class, and the Elman cell by its nonlinearity too: tanh and relu run different ops."""
        return _memo(_KEYS, _key, self)


def _memo(memo, fn, *args):
    """fn(*args), worked out once per args in `memo` (auto asks at every call); while torch.compile
    traces, worked out afresh, so that the graph holds no guard on the memo's contents."""
    if torch.compiler.is_compiling():
        return fn(*args)
    value = memo.get(args)
    if value is None:
        value = memo[args] = fn(*args)
    return value


_KEYS, _CHOICES = {}, {}


def _key(sig):
    name = _CELL_NAMES.get(sig.mode, cellspec.of(sig.mode).cell_mode) if sig.cell else sig.mode
    return (f"{name}-L{sig.layers}-{'bi' if sig.directions == 2 else 'uni'}-T{sig.T}-B{sig.B}-"
            f"I{sig.I}-H{sig.H}-R{sig.R}-{sig.dtype}{_TF32_TAGS[sig.tf32 or '']}-"
            f"{'train' if sig.training else 'infer'}{'-packed' if sig.lengths else ''}")


_TF32_TAGS = {"": "", "cudnn": "-tf32cudnn", "matmul": "-tf32matmul", "cudnn+matmul": "-tf32"}
_CELL_NAMES = {"RNN_TANH": "RNNCell_TANH", "RNN_RELU": "RNNCell_RELU"}


def bucket(T):
    """T rounded up to a power of two (1, 2, 4, ...)."""
    return 1 if T <= 1 else 1 << (T - 1).bit_length()


def signature(mode, *, T, B, I, H, R=None, layers=1, bidirectional=False, dtype, training,
              lengths=False, cell=False):
    """The Signature of a call (T bucketed; tf32 read from torch's flags now), or None for a dtype
    the triton kernels do not run (auto then needs no measuring)."""
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        return None
    tf32 = tf32_allowed() if name == "float32" else ""
    return Signature(mode, bool(cell), layers, 2 if bidirectional else 1, bucket(T), B, I, H, H if R is None else R,
                     name, tf32, bool(training), bool(lengths))


def tf32_allowed():
    """Which TF32 flags torch has on now: '', 'cudnn', 'matmul' or 'cudnn+matmul' (Signature.tf32).
    Each backend follows its own: cuDNN only cuDNN's, cuBLAS and the triton kernels only matmul's."""
    return "+".join(name for name, on in (("cudnn", torch.backends.cudnn.allow_tf32),
                                          ("matmul", torch.backends.cuda.matmul.allow_tf32)) if on)


class Choice(NamedTuple):
    """What auto runs: backend 'aten' or 'triton', and triton's strategy (None: its heuristic)."""
    backend: str
    strategy: object = None

    @property
    def label(self):
        return self.backend if self.strategy is None else f"{self.backend}:{self.strategy}"

    @classmethod
    def parse(cls, label):
        """'aten', 'triton' or 'triton:<strategy>' -> Choice; ValueError for anything else."""
        return _memo(_CHOICES, _parse, cls, label)


def _parse(cls, label):
    backend, _, strategy = str(label).partition(":")
    if label == "aten" or (backend == "triton" and strategy in ("", *STRATEGIES)):
        return cls(backend, strategy or None)
    raise ValueError(f"not a choice of backend='auto': {label!r}")


def enabled():
    """FASTRNN_AUTOTUNE (read at every call): unset or '1' measures, '0' leaves it to the static rule."""
    value = os.environ.get(ENV, "1").strip() or "1"
    if value not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 (static rule) or 1 (measure), got {value!r}")
    return value == "1"


# --- the static rule ------------------------------------------------------------------------------
def cudnn_persistent(sig):
    """Is `sig` one of the narrow cases where cuDNN runs its persistent kernels: fp16, one
    unidirectional layer, B a multiple of 8, and H a multiple of 128 up to 1024 or small enough for
    the small-H variants (H <= 192 forward only, <= 128 with a backward)?"""
    if sig.cell or sig.dtype != "float16" or sig.layers != 1 or sig.directions != 1 or sig.B % 8:
        return False
    return sig.H <= (128 if sig.training else 192) or (sig.H % 128 == 0 and sig.H <= 1024)


def static_choice(sig):
    """The decision without measuring: torch.nn where cuDNN's persistent kernels run, else triton
    with its heuristic strategy (or FASTRNN_TRITON_STRATEGY)."""
    return Choice("aten") if cudnn_persistent(sig) else Choice("triton")


# --- choosing from measurements -------------------------------------------------------------------
def select(sig, candidates, timer, *, atol=None, rtol=None):
    """Pick from `candidates` ({label: zero-argument callable -> list of result tensors}, torch.nn's
    "aten" first) for `sig`: run each once, keep those whose results agree with aten's (within
    atol / rtol, by default twice the oracle's tolerances for sig's dtype and measured T), time
    those with `timer(fn) -> seconds`, and take the fastest (ties: the earliest label).

    Returns the decision record {"choice": label, "times_ms": {label: ms}, "excluded": {label:
    reason}, "warn": [labels excluded for a reason worth reporting], "persist": bool}. If aten
    itself raises, nothing can be verified: the choice is aten (whose error the call then meets),
    with nothing timed. "persist" is False when the decision rests on a failure that says nothing
    lasting about the case (aten raising, a candidate out of memory or hitting a CUDA error, or
    refused by torch.use_deterministic_algorithms): such a decision holds for this process only."""

    labels = list(candidates)
    if labels[0] != "aten":
        raise ValueError(f"the first candidate must be torch.nn's ('aten'), got {labels}")
    if atol is None or rtol is None:
        atol, rtol = _tolerances(sig)
    excluded, warn, agreeing, transient = {}, [], [], []

    def failed(label, exc, timed=False):  # whatever it raised excludes it; whether to warn, to keep it
        excluded[label] = _why(exc)
        if _transient(exc):
            transient.append(label)
        # a refusal is expected before a candidate runs; once it ran, failing is as bad as a wrong answer
        if not (_circumstance(exc) or (_refusal(exc) and not timed)):
            warn.append(label)
    try:
        expected = candidates["aten"]()
    except Exception as exc:  # nothing to compare with: leave the call to torch.nn
        return {"choice": "aten", "times_ms": {}, "excluded": {"aten": _why(exc)}, "warn": [], "persist": False}
    agreeing.append("aten")
    for label in labels[1:]:
        try:
            got = candidates[label]()
        except Exception as exc:
            failed(label, exc)
            continue
        mismatch = _mismatch(got, expected, atol, rtol)
        if mismatch:
            excluded[label] = f"disagrees with torch.nn: {mismatch}"
            warn.append(label)
        else:
            agreeing.append(label)
    times = {}
    for label in agreeing:
        try:
            times[label] = timer(candidates[label])
        except Exception as exc:
            failed(label, exc, timed=True)
    if "aten" not in times:  # torch.nn's own failure is torch.nn's to report, at the call
        return {"choice": "aten", "times_ms": {}, "excluded": excluded, "warn": [w for w in warn if w != "aten"],
                "persist": False}
    agreeing = [label for label in agreeing if label in times]
    fastest = min(times.values())
    choice = next(label for label in agreeing if times[label] <= fastest * (1 + TIE))
    return {"choice": choice, "times_ms": {k: v * 1e3 for k, v in times.items()}, "excluded": excluded,
            "warn": warn, "persist": not transient}


def _refusal(exc):
    """fastrnn's own refusal to launch a case (a split grid that cannot be co-resident, a strategy
    the device cannot run): expected, recorded, not worth a report."""
    from .backends import BackendError
    return isinstance(exc, BackendError) or type(exc) is ValueError


def _circumstance(exc):
    """A failure of this moment or this process's settings, not of the candidate: out of memory, or
    refused under torch.use_deterministic_algorithms. Not worth a report."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc) or "deterministic" in str(exc)


def _transient(exc):
    """Does `exc` say nothing lasting about the case (_circumstance, or a CUDA error, after which
    the process's CUDA context may be unusable)? Then the decision is not written to disk."""
    accelerator = getattr(torch, "AcceleratorError", ())  # torch >= 2.8 raises CUDA errors as this
    return _circumstance(exc) or isinstance(exc, accelerator) or "CUDA error" in str(exc)


def _why(exc):
    return f"raised {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


def _tolerances(sig):
    from .testing.compare import tolerances
    # fp32 with TF32 rounds like fp16 (10 mantissa bits)
    dtype = torch.float16 if sig.tf32 else getattr(torch, sig.dtype)
    atol, rtol = tolerances(dtype, min(sig.T, T_CAP))
    return 2 * atol, 2 * rtol  # both sides may be that far from the exact result


def _mismatch(got, expected, atol, rtol):
    """'' if every tensor of `got` is close to its twin in `expected`, else what differs."""
    if len(got) != len(expected):
        return f"{len(got)} results, torch.nn gives {len(expected)}"
    for k, (a, e) in enumerate(zip(got, expected)):
        if (a is None) != (e is None):
            return f"result {k} is None on one side only"
        if a is None:
            continue
        if a.shape != e.shape:
            return f"result {k} has shape {tuple(a.shape)}, torch.nn's {tuple(e.shape)}"
        a, e = a.detach().double(), e.detach().double()
        if not bool(torch.isfinite(a).all()) and bool(torch.isfinite(e).all()):
            return f"result {k} has NaN/Inf"
        err = (a - e).abs()
        if not bool((err <= atol + rtol * e.abs()).all()):
            return f"result {k}: max abs err {err.max().item():.3e} (atol {atol:.1e}, rtol {rtol:.1e})"
    return ""


def warning_text(sig, record, device_name):
    """The one warning of a signature whose candidates were excluded for a reason worth reporting."""
    parts = "; ".join(f"{label} {record['excluded'][label]}" for label in record["warn"])
    return (f"fastrnn: backend='auto' excluded {parts}, for {sig.key} on {device_name}; it runs "
            f"{record['choice']} for this case. Please report it with this message and the output of "
            "`python -m fastrnn check --device cuda`.")


# --- the glue: candidates and timer on a real GPU -------------------------------------------------
def decide(sig, device, *, measure=None):
    """The Choice of backend='auto' for a call of signature `sig` on CUDA `device`.

    FASTRNN_AUTOTUNE=0: the static rule. While torch.compile / export traces: the decision held
    in memory or on disk (`held`), else the static rule. While a CUDA graph is being captured
    (nothing may synchronize), a dispatch mode is on (FakeTensorMode) or this thread is measuring
    already: the decision held in memory, else the static rule. Otherwise the cached decision (memory, then disk), else
    `measure(sig, device)` -> record (default: `measure_on_gpu`), which is then cached (in memory
    only when the record says it must not persist)."""
    if not enabled():
        return static_choice(sig)
    from . import tunecache
    key = cache_key(sig)
    if torch.compiler.is_compiling():
        label = held(key, str(device))
        return static_choice(sig) if label == "" else Choice.parse(label)
    if measuring() or _capturing(device) or _dispatch_mode():
        label = tunecache.remembered(key, device)
        return static_choice(sig) if label is None else Choice.parse(label)
    cache = tunecache.for_device(device)
    record = cache.get(key)
    if record is None:
        record = (measure or measure_on_gpu)(sig, device)
        if record.get("warn"):
            warnings.warn(warning_text(sig, record, cache.identity.get("gpu", str(device))), AutotuneWarning,
                          stacklevel=2)
        persist = record.get("persist", True)
        record = {k: v for k, v in record.items() if k not in ("warn", "persist")}
        cache.put(key, record, persist=persist)
    return Choice.parse(record["choice"])


def _dispatch_mode():
    """Is a dispatch mode on (FakeTensorMode, as torch.export and fake-tensor tools run under;
    a FLOP counter): its tensors are not the call's real ones, and what measuring would run
    under it is not what the call runs."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode
    return _get_current_dispatch_mode() is not None


@torch.compiler.assume_constant_result
def held(key, device):
    """The choice label held for `key` on `device` (a str): in memory, else in the cache file; ''
    for none. While torch.compile traces, this runs as plain Python (the file is read then, not
    traced) and the graph holds its answer as a constant, guarded on nothing: a later decision
    of another signature does not recompile it."""
    from . import tunecache
    label = tunecache.remembered(key, device)
    if label is None:
        record = tunecache.for_device(device).get(key)
        label = None if record is None else record["choice"]
    return label or ""


def _capturing(device):
    """Is a CUDA graph being captured on `device`'s current stream? (Never before CUDA is initialised.)"""
    if torch.device(device).type != "cuda" or not torch.cuda.is_initialized():
        return False
    with _on(device):
        return torch.cuda.is_current_stream_capturing()


def _on(device):
    """CUDA `device` current for the block (nothing to do off CUDA: the tests measure on CPU)."""
    return torch.cuda.device(device) if torch.device(device).type == "cuda" else contextlib.nullcontext()


def cache_key(sig):
    """The cache's key of `sig`: its key, and the strategy FASTRNN_TRITON_STRATEGY pins, if any."""
    pinned = os.environ.get(STRATEGY_ENV, "").strip()
    return sig.key + (f"-pin:{pinned}" if pinned else "")


def candidate_labels():
    """'aten', then 'triton:<strategy>' per strategy (only the pinned one when one is pinned)."""
    pinned = os.environ.get(STRATEGY_ENV, "").strip()
    return ["aten"] + [f"triton:{s}" for s in ((pinned,) if pinned else STRATEGIES)]


def measure_on_gpu(sig, device):
    """select() over the real candidates of `sig` on CUDA `device`, timed with CUDA events, with
    autocast and any dispatch mode of the caller off, and for an fp32 `sig` the TF32 flags as `sig`
    has them. One measurement at a time in this process (_LOCK): the flags are process-wide, and
    two measurements at once would time each other."""
    from torch.utils._python_dispatch import _disable_current_modes
    # `device` current while measuring: CUDA events, streams and the caches of the kernels are a
    # device's own, and the caller's current device may be another GPU
    with _LOCK, _on(device), _measuring(), _disable_current_modes(), torch.autocast("cuda", enabled=False), \
            _tf32_of(sig), torch.set_grad_enabled(sig.training), \
            torch.autograd.graph.saved_tensors_hooks(_same, _same):
        # The caller's saved-tensor hooks (non-reentrant activation checkpointing's, offloading's)
        # are for its own graph: the candidates' backward would run them, and checkpointing's
        # would recompute the caller's forward from inside this one. These identity hooks hide them.
        return select(sig, candidates(sig, device), cuda_timer)


def _same(t):
    return t


_LOCK = threading.Lock()
_STATE = threading.local()  # .measuring: this thread is inside measure_on_gpu


@contextlib.contextmanager
def _measuring():
    before = getattr(_STATE, "measuring", False)
    _STATE.measuring = True
    try:
        yield
    finally:
        _STATE.measuring = before


def measuring():
    """Is this thread measuring candidates now? A decision asked meanwhile (a hook of the caller's
    running inside a measurement) takes the static rule: measuring may not start over inside itself."""
    return getattr(_STATE, "measuring", False)
# torch.backends.cudnn.flags() sets every flag it takes (to its defaults when not given); None
# leaves one as it is. Its parameters differ between torch versions, hence the names read here.
_CUDNN_FLAGS = tuple(inspect.signature(torch.backends.cudnn.flags).parameters)


def _tf32_of(sig):
    """The TF32 flags as an fp32 `sig` has them (no flag is touched for fp16 / bf16)."""
    if sig.dtype != "float32":
        return contextlib.nullcontext()
    allowed = (sig.tf32 or "").split("+")
    return tf32_flags(cudnn="cudnn" in allowed, matmul="matmul" in allowed)


@contextlib.contextmanager
def tf32_flags(cudnn=None, matmul=None):
    """cuDNN's and cuBLAS's (matmul's) TF32 flags set for the block (None: left alone, as is a
    flag already so), then put back. cuDNN's goes through torch.backends.cudnn.flags(), the one
    way torch allows once the global flags are frozen (torch.backends.disable_global_flags(),
    which torch's own test harness calls)."""
    with contextlib.ExitStack() as stack:
        if cudnn is not None and torch.backends.cudnn.allow_tf32 != cudnn:
            stack.enter_context(torch.backends.cudnn.flags(**{**dict.fromkeys(_CUDNN_FLAGS), "allow_tf32": cudnn}))
        blas = torch.backends.cuda.matmul
        if matmul is not None and blas.allow_tf32 != matmul:
            stack.callback(setattr, blas, "allow_tf32", blas.allow_tf32)
            blas.allow_tf32 = matmul
        yield


def cuda_timer(fn, repeats=REPEATS):
    """Median seconds of `fn()` on the current CUDA stream, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def inputs(sig, device):
    """Random (x, hx, weights, lengths) of `sig`'s shapes (T capped at T_CAP) for rnn_stack: a
    private generator, so the caller's random stream is untouched; weights as torch.nn draws them."""
    gen = torch.Generator(device=device).manual_seed(0)
    dtype, cell = getattr(torch, sig.dtype), cellspec.of(sig.mode)
    T, G, H, R, D = min(sig.T, T_CAP), cell.gates, sig.H, sig.R, sig.directions
    grad = sig.training

    def rand(*shape, scale=1.0):
        t = (torch.rand(shape, generator=gen, device=device) * 2 - 1) * scale
        return t.to(dtype).requires_grad_(grad)
    k = 1 / math.sqrt(H)
    weights = []
    for layer in range(sig.layers):
        width = sig.I if layer == 0 else D * R
        for _ in range(D):
            w = [rand(G * H, width, scale=k), rand(G * H, R, scale=k), rand(G * H, scale=k), rand(G * H, scale=k)]
            weights.append(tuple(w + ([rand(R, H, scale=k) if R != H else None] if cell.projects else [])))
    x = rand(T, sig.B, sig.I)
    widths = {"h": R, "c": H}
    hx = cell.hx([rand(sig.layers * D, sig.B, widths[s]) for s in cell.states])
    lengths = None
    if sig.lengths:  # from T down to T/4, as a padded PackedSequence gives them
        lengths = torch.linspace(T, max(1, T // 4), sig.B, device=device).round().to(torch.int64)
    return x, hx, weights, lengths


def candidates(sig, device):
    """{label: zero-argument callable -> list of result tensors} for `sig` on `device`, aten first."""
    from .functional import rnn_stack
    x, hx, weights, lengths = inputs(sig, device)
    cell = cellspec.of(sig.mode)
    stack = dict(mode=sig.mode, num_layers=sig.layers, bidirectional=sig.directions == 2, lengths=lengths)

    def aten():
        if sig.cell:  # torch.nn's cell: its own op on x [B, I]
            states = cell.states_of(cellspec.vf(cell.cell_vf if sig.mode != "RNN_RELU" else "rnn_relu_cell")(
                x[0], cell.hx([s[0] for s in cell.states_of(hx)]), *weights[0][:4]))
            return (states[0][None], *(s[None] for s in states))
        from . import aten as aten_backend
        # cuDNN runs in training mode only if told (no dropout here): its inference mode saves
        # nothing for a backward, which then raises, and auto would take that for torch.nn failing
        out, final = aten_backend.run_stack(x, hx, weights, training=sig.training, **stack)
        return (out, *cell.states_of(final))

    def triton(strategy):
        def run():
            out, final = rnn_stack(x, hx, weights, backend="triton", strategy=strategy, **stack)
            return (out, *cell.states_of(final))
        return run
    fns = {"aten": aten, **{label: triton(label.partition(":")[2]) for label in candidate_labels()[1:]}}
    if sig.training:
        fns = {label: _with_backward(fn, x, hx, weights, cell) for label, fn in fns.items()}
    return {label: _results(fn) for label, fn in fns.items()}


def _with_backward(fn, x, hx, weights, cell):
    """fn plus a backward with fixed cotangents: -> results and the gradients of every input."""
    leaves = [t for t in (x, *cell.states_of(hx), *(w for ws in weights for w in ws)) if t is not None]

    def run():
        results = fn()
        gen = torch.Generator(device=x.device).manual_seed(1)
        cotangents = [torch.randn(r.shape, generator=gen, device=r.device).to(r.dtype) for r in results]
        grads = torch.autograd.grad(results, leaves, cotangents, allow_unused=True)
        return (*results, *grads)
    return run


def _results(fn):
    return lambda: [None if r is None else r.detach() for r in fn()]
