"""`python -m fastrnn inspect`: compile every kernel configuration for sm_80 and sm_90, check resources.

No GPU is needed. For each point of a shape grid (cell, pass, dtype, B, H, training or inference,
direction, lengths) this runs the real launcher (kernels/recurrence.py) with the
launch configuration a GPU would get (`launch_config(..., device="cuda")`), but with the kernel
replaced by a recorder, so it sees exactly the arguments and constexprs a launch passes. Triton's
own binder turns them into the specialization a GPU launch compiles (argument dtypes, constexprs,
None pointers, ints equal to 1, 16-divisibility). Points with the same specialization and
num_warps are one compile. Each distinct kernel is compiled for each architecture with
`triton.compile`, and the cubin's resources are read with the Triton wheel's `cuobjdump -res-usage`:
registers, stack and local memory (a spill when either is non-zero) and static shared memory, plus
Triton's dynamic shared memory (`metadata.shared`). A kernel FAILs if it spills or if static +
dynamic shared memory exceeds the architecture's per-block limit; the command then exits with 1.
Compiles run in fresh processes (see `run_jobs`); Triton caches them, so a rerun takes seconds.

Strategies (kernels/config.py): `--strategy auto` (the default) compiles what the heuristic
launches at each point (Case.strategy "auto"); `--strategy rows|split|stepwise`
(repeatable) forces that strategy at every point, as `config={"STRATEGY": ...}` or
FASTRNN_TRITON_STRATEGY can; `--strategy all` forces each of the three at every point, so that a
clean run means no spill and no shared-memory overflow whichever strategy a user picks. stepwise
launches the split kernel itself (its barrier off by a runtime argument; the cooperative launch is
a launch attribute, not code), so forced split and stepwise are the same compile jobs, counted as
"split". The enumeration line and the summary count the distinct kernels of each kernel strategy.
"""
import argparse
import contextlib
import importlib
import importlib.util
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections import namedtuple
from concurrent.futures import ProcessPoolExecutor

import torch

from .bench import _checked, _positive_int, _unwritable

ARCHS = (80, 90)
# Max shared memory per block with the opt-in Triton uses: A100 163 KiB, H100 227 KiB.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CELLS = ("elman", "lstm", "lstm-proj", "gru")  # lstm-proj: proj_size P = H / 2
HS = (32, 64, 128, 256, 512, 1024, 2048)
BS = (1, 16, 64, 256)
# --quick: still every tile kind (W_hh resident at H = 32, 64, 128, streamed at 2048; BLOCK_B 16
# with B = 1 specialized, and 32), the fp32 and the tensor-core dot; fp16 compiles like bf16.
QUICK_HS = (32, 64, 128, 2048)
QUICK_BS = (1, 64)
QUICK_DTYPES = ("fp32", "bf16")
T = 5  # any T but 1 (Triton makes an int argument equal to 1 a constexpr) compiles the same kernel

STRATEGIES = ("rows", "split", "stepwise")
# One launch the dispatcher can make. train: the forward saves for backward (SAVE; not Elman's); the
# backward runs only in training. tf32: fp32 with torch.backends.cuda.matmul.allow_tf32 set.
# strategy: "auto" (the heuristic's, what a call launches, whatever FASTRNN_TRITON_STRATEGY says
# in this process) or one of STRATEGIES (forced).
Case = namedtuple("Case", "cell pass_ dtype B H train reverse lengths relu tf32 strategy")


def grid(quick=False, flags="worst", dtypes=tuple(DTYPES), cells=CELLS, strategies=("auto",)):
    """Every launch of the grid, as Cases, once per strategy in `strategies` ("auto" or one of
    STRATEGIES). flags="worst" keeps one setting of the flags that do not change tiles (reverse,
    lengths, tanh) and leaves out TF32 (opt-in); "all" enumerates them all. Direction and lengths
    are runtime arguments of one binary, so only relu and TF32 add compiles."""
    two = (False, True) if flags == "all" else (True,)
    cases = []
    for cell, strategy in [(c, s) for s in strategies for c in cells]:
        for dtype in dtypes:
            for tf32 in ((False, True) if dtype == "fp32" and flags == "all" else (False,)):
                for pass_, train in (("fwd", False), ("fwd", True), ("bwd", True)):
                    if pass_ == "fwd" and train and description(cell).from_output:
                        continue  # nothing to save: the same launch in training and inference
                    for relu in ((False, True) if flags == "all" and cell == "elman" else (False,)):
                        for reverse in two:
                            for lengths in two:
                                for H in (QUICK_HS if quick else HS):
                                    for B in (QUICK_BS if quick else BS):
                                        cases.append(Case(cell, pass_, dtype, B, H, train, reverse,
                                                          lengths, relu, tf32, strategy))
    return cases


def jit_kernels():
    """The kernel modules with compilable JITFunctions. Under TRITON_INTERPRET=1 (as in the test
    suite) fastrnn.kernels holds interpreter functions, so load a private copy with it off."""
    from triton.runtime.jit import JITFunction

    from . import kernels
    from .kernels import recurrence  # noqa: F401
    if isinstance(kernels.recurrence.forward_kernel, JITFunction):
        return kernels
    name = "_fastrnn_inspect_kernels"
    if name not in sys.modules:
        path = os.path.dirname(kernels.__file__)
        spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"),
                                                      submodule_search_locations=[path])
        with _no_interpreter():
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            for sub in ("common", "config", "cells", "recurrence"):
                setattr(module, sub, importlib.import_module(f"{name}.{sub}"))
    return sys.modules[name]


def _no_interpreter():
    """TRITON_INTERPRET=0 for a while: Triton reads it when decorating and when compiling."""
    return _env("TRITON_INTERPRET", "0")


@contextlib.contextmanager
def _env(name, value):
    """The environment variable `name` set to `value` (None: unset) for a while."""
    old = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if old is not None:
            os.environ[name] = old


class _Recorded(Exception):
    """Raised by the recorder at a split launch's compile step: the recording is complete."""


@contextlib.contextmanager
def _recording(module, name):
    """Replace module.<name> (a kernel) by a recorder of its first launch, `kernel[grid](*args,
    **kwargs)` or (a split launch sizing its grid) `kernel.warmup(*args, grid=..., **kwargs)`."""
    real, calls = getattr(module, name), []

    class Recorder:
        def __getitem__(self, grid_):
            return lambda *args, **kwargs: calls.append((args, kwargs))

        def warmup(self, *args, grid, **kwargs):
            calls.append((args, kwargs))
            raise _Recorded

    setattr(module, name, Recorder())
    try:
        yield real, calls
    finally:
        setattr(module, name, real)


@contextlib.contextmanager
def _allow_tf32(value):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = value
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def kernel_cell(cell):
    """The kernels' name of a grid cell (lstm-proj is the LSTM with a projection)."""
    return "lstm" if cell == "lstm-proj" else cell


def description(cell):
    """kernels/cells.py's description of a grid cell (gates, c, what its backward reads)."""
    return jit_kernels().cells.CELLS[kernel_cell(cell)]


def saves(case):
    """Does the launch of `case` store activations for backward (a forward in training, unless the
    cell's backward reads the output itself)?"""
    return case.pass_ == "fwd" and case.train and not description(case.cell).from_output


def launch(case, k=None, override=None):
    """Run the real launcher for `case` with its GPU launch config (`override` replaces keys, to try
    a heuristic) and a recording kernel. Returns (cell, kernel, args, kwargs) of the launch."""
    k = k or jit_kernels()
    cell, desc = kernel_cell(case.cell), description(case.cell)
    dt, B, H, G = DTYPES[case.dtype], case.B, case.H, desc.gates
    R = H // 2 if case.cell == "lstm-proj" else H
    e = lambda *shape, dtype=dt: torch.empty(shape, dtype=dtype, device="meta")  # not "cpu": no interpreter
    f32 = torch.float32
    lengths = e(B, dtype=torch.int32) if case.lengths else None
    if case.strategy != "auto":
        override = {"STRATEGY": case.strategy, **(override or {})}
    with _allow_tf32(case.tf32), _env(k.config.ENV, None):
        cfg = k.config.launch_config(cell, case.pass_, B, H, R, dt, "cuda", override=override,
                                     save=saves(case))
    name = "forward_kernel" if case.pass_ == "fwd" else "backward_kernel"
    # one direction: a bidirectional layer launches the same kernel (its second direction is grid
    # axis 2, with a second set of pointers of the same types and, for every H of the grid, the
    # same 16-byte alignment), so it compiles to the same binary
    w_hh = (e(G * H, R),)
    w_hr = (e(R, H),) if case.cell == "lstm-proj" else None
    c = dict(c0=e(1, B, H)) if desc.has_c else {}
    opts = dict(w_hr=w_hr, reverse=case.reverse, relu=case.relu, config=cfg, **c)
    with _recording(k.recurrence, name) as (kernel, calls), contextlib.suppress(_Recorded):
        if case.pass_ == "fwd":
            rec_bias = (e(H),) if desc.rec_bias else None
            k.recurrence.forward(cell, (e(T, B, G * H),), w_hh, e(1, B, R), lengths, e(T, B, R),
                                 rec_bias=rec_bias, save=saves(case), **opts)
        else:
            saved = None if desc.from_output else \
                (e(1, T, B, desc.saved * H, dtype=f32), e(1, T, B, H, dtype=f32) if desc.has_c else None, None)
            dc = dict(dc_n=e(1, B, H)) if desc.has_c else {}
            k.recurrence.backward(cell, e(T, B, R), e(1, B, R), e(T, B, R), w_hh, lengths, saved, **dc, **opts)
    args, kwargs = calls[0]
    kwargs.pop("launch_cooperative_grid", None)  # how the driver launches, not code: split = stepwise
    return cell, kernel, args, kwargs


def _frozen(x):
    if isinstance(x, dict):
        return tuple((k, _frozen(v)) for k, v in x.items())  # argument order matters
    if isinstance(x, (list, tuple)):
        return tuple(_frozen(v) for v in x)
    return x


def specialize(case, arch, k=None, override=None):
    """The compile job of `case` on sm_<arch>: a hashable tuple
    (module, kernel name, arch, signature, constexprs, attrs, options), exactly what a launch
    on that GPU would hand to triton.compile (found with Triton's own binder)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    cell, kernel, args, kwargs = launch(case, k, override)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")  # a launch's default
        backend = make_backend(GPUTarget("cuda", arch, 32))
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        bound, spec, options = binder(*args, **kwargs)
        _, signature, constexprs, attrs = kernel._pack_args(backend, options, bound, spec, options)
    return (cell, kernel.__name__, arch, _frozen(signature), _frozen(constexprs), _frozen(attrs),
            _frozen(options))


def parse_res_usage(text):
    """cuobjdump -res-usage output -> {function name: {"REG": n, "STACK": n, "SHARED": n, ...}}."""
    out = {}
    for name, line in re.findall(r"Function (\S+):\s*\n\s*(REG:.*)", text):
        out[name] = {k: int(v) for k, v in re.findall(r"([A-Z_]+)(?:\[\d+\])?:(\d+)", line)}
    return out


def cuobjdump():
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_job(job):
    """Compile one job from `specialize` and read its resources. Returns a dict."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    cell, name, arch, signature, constexprs, attrs, options = job
    kernel = getattr(jit_kernels().recurrence, name)
    attrs = {path: [list(a) for a in v] for path, v in attrs}
    src = ASTSource(kernel, dict(signature), dict(constexprs), attrs)
    start = time.perf_counter()
    with warnings.catch_warnings(), _no_interpreter():
        warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")  # a launch's default
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(options))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        text = subprocess.run([cuobjdump(), "-res-usage", path], check=True, capture_output=True,
                              text=True).stdout
    res = parse_res_usage(text)[name]
    shared = res["SHARED"] + compiled.metadata.shared
    spills = res["STACK"] + res["LOCAL"]
    return dict(regs=res["REG"], stack=res["STACK"], local=res["LOCAL"], static_shared=res["SHARED"],
                dynamic_shared=compiled.metadata.shared, shared=shared, spills=spills,
                limit=SHARED_LIMIT[arch], ok=spills == 0 and shared <= SHARED_LIMIT[arch],
                seconds=round(time.perf_counter() - start, 2))


def constexprs(job):
    """{argument name: value} of a job's constexprs (Triton keys them by argument index)."""
    names = [n for n, _ in job[3]]
    return {names[path[0]]: v for path, v in job[4]}


def describe(job):
    """Short text of a job's strategy, tile constexprs and flags, e.g.
    'split BB16 BH16 BK256x3 WR w4'."""
    c, options = constexprs(job), job[6]
    pieces = f"x{c['PIECES']}" if c["PIECES"] > 1 else ""
    parts = [c["STRATEGY"], f"BB{c['BLOCK_B']}", f"BH{c['BLOCK_H']}", f"BK{c['BLOCK_K']}{pieces}"]
    parts += [word for key, word in (("W_RESIDENT", "WR"), ("DOT_FP32", "fp32dot"), ("PROJ", "proj"),
                                     ("SAVE", "save"), ("RELU", "relu")) if c.get(key)]
    if c["PRECISION"] != "ieee":
        parts.append(c["PRECISION"])
    if c.get("B") == 1:
        parts.append("B=1")  # Triton specializes an int argument equal to 1
    return " ".join(parts + [f"w{dict(options)['num_warps']}"])


def _span(values):
    values = sorted(values)
    return ",".join(map(str, values))


def per_strategy(jobs):
    """'rows 88, split 256': how many of `jobs` compile each kernel strategy (split's serve
    stepwise too)."""
    counts = {s: 0 for s in ("rows", "split")}
    for job in jobs:
        counts[constexprs(job)["STRATEGY"]] += 1
    return ", ".join(f"{s} {n}" for s, n in counts.items() if n)


def plan(cases, archs=ARCHS, override=None):
    """Group cases by compile job: {job: [cases]}, in first-seen order."""
    k, jobs = jit_kernels(), {}
    for arch in archs:
        for case in cases:
            jobs.setdefault(specialize(case, arch, k, override), []).append(case)
    return jobs


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help=f"H in {QUICK_HS}, B in {QUICK_BS}, dtypes {QUICK_DTYPES} instead of the "
                             "full grid (fewer distinct kernels, every tile kind)")
    parser.add_argument("--flags", choices=("worst", "all"), default="worst",
                        help="'all' also enumerates forward/reverse and with/without lengths (runtime "
                             "arguments of one binary: no more compiles), relu and fp32 with TF32 allowed "
                             "(default: reverse with lengths, tanh, TF32 off)")
    parser.add_argument("--arch", type=int, action="append", choices=ARCHS, dest="archs",
                        help="compile for this sm_ version only (repeatable; default: 80 and 90)")
    parser.add_argument("--dtype", action="append", choices=tuple(DTYPES), dest="dtypes",
                        help="only this dtype (repeatable)")
    parser.add_argument("--cell", action="append", choices=CELLS, dest="cells",
                        help="only this cell (repeatable)")
    parser.add_argument("--strategy", action="append", choices=("auto", "all", *STRATEGIES), dest="strategies",
                        help="'auto' (default): the strategy the heuristic launches at each point; "
                             f"{', '.join(STRATEGIES)}: that one forced at every point (repeatable); "
                             "'all': each of them forced at every point")
    parser.add_argument("--jobs", type=_positive_int, default=min(2, os.cpu_count() or 1),
                        help="compile processes (default: min(2, CPUs))")
    parser.add_argument("--json", metavar="PATH", help="also save every kernel's resources as JSON")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", type=_override,
                        help="replace a launch config key everywhere, to try a heuristic before changing "
                             "kernels/config.py, e.g. num_warps=8 (repeatable)")
    parser.add_argument("--estimate", action="store_true",
                        help="instead of the resource check: the static per-step estimate on sm_90 "
                             "(fastrnn/estimate.py; a static bound and a model, not a timing)")
    from . import estimate
    estimate.add_arguments(parser)
    # _main reports misuse that only shows once options meet the grid the way argparse does
    parser.set_defaults(usage_error=parser.error)


def _power_of_two(v):
    return v >= 1 and v & (v - 1) == 0


def _override_values():
    """kernels/config.py's KEYS but STRATEGY -> argparse type of a value a GPU launch can take.
    Tiles go through tl.arange (a power of two); Triton asserts num_warps is a power of two, and CUDA
    allows 1024 threads (32 warps) per block; PRECISION is one of the input precisions Triton's
    tl.dot knows."""
    from triton.backends.nvidia.compiler import CUDAOptions
    precisions = CUDAOptions.allowed_dot_input_precisions
    tile = _checked(int, _power_of_two, "a power of two")
    flag = _checked({"True": True, "False": False}.get, lambda v: True, "True or False")
    return dict(BLOCK_B=tile, BLOCK_H=tile, BLOCK_K=tile, W_RESIDENT=flag, DOT_FP32=flag,
                PIECES=_positive_int,
                num_warps=_checked(int, lambda v: _power_of_two(v) and v <= 32, "a power of two up to 32"),
                num_stages=_checked(int, lambda v: 1 <= v <= 8, "an integer from 1 to 8"),
                maxnreg=_checked(int, lambda v: 16 <= v <= 255, "an integer from 16 to 255"),
                PRECISION=_checked(str, lambda v: v in precisions, f"one of {', '.join(precisions)}"))


def _override(text):
    """argparse type of --override: 'KEY=VALUE' -> (key, value), KEY one of kernels/config.py's KEYS
    but STRATEGY (--strategy chooses it, per point)."""
    from .kernels.config import KEYS
    key, eq, value = text.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key == "STRATEGY":
        raise argparse.ArgumentTypeError("STRATEGY: use --strategy")
    if key not in KEYS:
        known = ", ".join(k for k in KEYS if k != "STRATEGY")
        raise argparse.ArgumentTypeError(f"unknown launch config key {key!r}; known: {known}")
    try:
        return key, _override_values()[key](value)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{key}: {exc}") from None


def main(args):
    if args.estimate:
        from . import estimate
        return estimate.main(args)
    with warnings.catch_warnings():
        # Triton 3.9 warns that TRITON_DEFAULT_FP_FUSION is unset; a launch compiles with its default
        warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
        return _main(args)


def _main(args):
    fail = args.usage_error  # prints usage and one error line, exits 2
    why = args.json and _unwritable(args.json)
    if why:  # before minutes of compiling, not after
        fail(f"--json {args.json}: {why}")
    start = time.perf_counter()
    # a repeated --dtype, --cell or --arch names it once (else its launches would count twice)
    dtypes = tuple(dict.fromkeys(args.dtypes or (QUICK_DTYPES if args.quick else DTYPES)))
    archs = tuple(dict.fromkeys(args.archs or ARCHS))
    strategies = [s for name in args.strategies or ("auto",) for s in (STRATEGIES if name == "all" else [name])]
    cases = grid(args.quick, args.flags, dtypes, tuple(dict.fromkeys(args.cells or CELLS)),
                 tuple(dict.fromkeys(strategies)))
    override = dict(args.override)
    try:
        jobs = plan(cases, archs, override or None)
    except ValueError as exc:  # launch_config: the override contradicts a launch of the grid
        if not override:
            raise
        fail(f"--override {' '.join(f'{k}={v}' for k, v in override.items())}: {exc}")
    print(f"{len(cases)} launches x {len(archs)} archs -> {len(jobs)} distinct kernels ({per_strategy(jobs)}; "
          f"{time.perf_counter() - start:.1f} s to enumerate); compiling with {args.jobs} process(es)",
          flush=True)
    keys = list(jobs)
    results = run_jobs(keys, args.jobs)
    rows = []
    for job, res in zip(keys, results):
        group = jobs[job]
        dtype = group[0].dtype + ("-tf32" if group[0].tf32 else "")
        cells = "/".join(sorted({c.cell for c in group}))
        rows.append(dict(arch=f"sm_{job[2]}", kernel=job[1], cell=cells, dtype=dtype, config=describe(job),
                         H=sorted({c.H for c in group}), B=sorted({c.B for c in group}),
                         launches=len(group), **res))
    header = ("arch", "kernel", "cell", "dtype", "config", "H", "B", "regs", "spill", "shared", "status")
    table = [header] + [(r["arch"], r["kernel"], r["cell"], r["dtype"], r["config"], _span(r["H"]),
                         _span(r["B"]), str(r.get("regs", "-")), str(r.get("spills", "-")),
                         str(r.get("shared", "-")), "OK" if r["ok"] else "FAIL")
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    failed = [r for r in rows if not r["ok"]]
    failed_jobs = [job for job, r in zip(keys, rows) if not r["ok"]]
    for r in failed:
        why = r.get("error") or (f"spills {r['stack']} B stack + {r['local']} B local" if r["spills"]
                                 else f"shared {r['shared']} B > limit {r['limit']} B")
        print(f"FAIL {r['arch']} {r['kernel']} {r['cell']} {r['dtype']} {r['config']} (H {_span(r['H'])}, "
              f"B {_span(r['B'])}): {why}")
    elapsed = time.perf_counter() - start
    failed_by = f" ({per_strategy(failed_jobs)})" if failed else ""
    print(f"{len(rows)} kernels ({per_strategy(keys)}), {len(failed)} failed{failed_by}, {elapsed:.1f} s "
          f"(shared limits: sm_80 {SHARED_LIMIT[80]} B, sm_90 {SHARED_LIMIT[90]} B; spill = stack or local > 0)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(seconds=round(elapsed, 1), kernels=rows, shared_limit=SHARED_LIMIT), f, indent=1)
    return 1 if failed else 0


def run_jobs(jobs, processes):
    """compile_job over `jobs` in `processes` fresh processes -> results in order. Fresh (spawned,
    TRITON_INTERPRET=0) because a process that imported Triton under the interpreter, like the test
    suite, has interpreter versions of triton.language's own jit functions and cannot compile."""
    with _no_interpreter(), ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_safe_compile, jobs))


def _safe_compile(job):
    """compile_job, but a compile error becomes a FAIL row instead of ending the run."""
    try:
        return compile_job(job)
    except Exception as exc:  # report every kernel; one broken config must not hide the others
        return dict(ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
