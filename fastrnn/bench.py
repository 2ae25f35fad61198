"""`python -m fastrnn bench`: time fastrnn against torch.nn on this machine.

Every case of `fastrnn.registry` builds a torch.nn module and a fastrnn one with the same weights,
then times the same step on both: `infer` is a forward under no_grad, `train` a forward plus a
backward with a fixed random cotangent. The timed callables synchronise the device inside, every
callable is warmed up first (Triton compilation and autotuning stay out), and the samples of the
implementations are interleaved so that drift in the machine's speed hits all of them alike.
Reported times are medians. torch.nn runs in the case's dtype. On CUDA it runs with TF32 off
(fastrnn's accumulators are fp32) and, for fp32 cases, the TF32-on cuDNN time is reported beside
it; which kernel torch.nn ran is recorded (`torch_nn_kernel`: bf16 RNNs reach cuDNN only in recent
torch and cuDNN versions, elsewhere torch's native loop). On CPU the reference backend's cost is
reported for the cheap cases. Every result says which backend fastrnn ran and, on triton, which
launch strategy its forward (and backward, in train) took per layer. On CUDA, with backend auto,
each result also holds auto's decision for the case (`auto`: the choice, each candidate's time as
auto measured it at T <= fastrnn.autotune.T_CAP, what it excluded), and the table shows them.
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

from . import backends, registry


# --- building the callables --------------------------------------------------------------------
def _torch_module(case, device):
    cls = getattr(torch.nn, case.module_name)
    return cls(case.H, case.H, num_layers=case.layers, bidirectional=case.bidirectional).to(
        device=device, dtype=case.torch_dtype)


def _fastrnn_module(case, torch_module, backend):
    import fastrnn
    cls = getattr(fastrnn, case.module_name)
    p = next(torch_module.parameters())
    m = cls(case.H, case.H, num_layers=case.layers, bidirectional=case.bidirectional,
            backend=backend).to(device=p.device, dtype=p.dtype)
    m.load_state_dict(torch_module.state_dict())
    return m


def _inputs(case, device):
    """(x, hx, cotangent of the output): x [T, B, H] or a PackedSequence of it."""
    dtype, D = case.torch_dtype, 2 if case.bidirectional else 1
    x = torch.randn(case.T, case.B, case.H, device=device, dtype=dtype)
    h0 = torch.randn(case.layers * D, case.B, case.H, device=device, dtype=dtype)
    hx = (h0, torch.randn_like(h0)) if case.kernel_cell == "lstm" else h0
    if case.packed:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, case.lengths())
        grad = torch.randn(x.data.shape[0], D * case.H, device=device, dtype=dtype)
    else:
        grad = torch.randn(case.T, case.B, D * case.H, device=device, dtype=dtype)
    return x, hx, grad


def _step(module, case, x, hx, grad, sync):
    """The timed callable: one inference forward, or one training forward + backward."""
    if case.mode == "infer":
        module.eval()

        def step():
            with torch.no_grad():
                module(x, hx)
            sync()
    else:
        module.train()

        def step():
            module.zero_grad(set_to_none=True)
            out = module(x, hx)[0]
            (out.data if case.packed else out).backward(grad)
            sync()
    return step


def _with_tf32(fn, on):
    from .autotune import tf32_flags

    def run():
        with tf32_flags(cudnn=on, matmul=on):  # cuDNN's flag cannot be set but through flags() when frozen
            fn()
    return run


def _extra_baselines(case, device):
    """{name: module called as module(x, hx)} from other libraries, for the cases they support,
    when installed (CUDA only). haste: one unidirectional fp32 LSTM layer, padded input."""
    extras = {}
    simple = case.layers == 1 and not case.bidirectional and not case.packed and case.dtype == "fp32"
    if case.cell == "lstm" and simple:
        try:
            import haste_pytorch as haste
        except ImportError:
            haste = None
        if haste is not None:
            extras["haste"] = haste.LSTM(case.H, case.H).to(device)
    return extras


def make_callables(case, device, *, backend="auto", reference=False):
    """{name: zero-argument timed callable} for one case: 'torch.nn', 'fastrnn' (both in the case's
    dtype), then on CUDA 'torch.nn TF32' (fp32 cases) and installed extras, and 'reference' when
    asked."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    torch.manual_seed(0)
    base = _torch_module(case, device)
    x, hx, grad = _inputs(case, device)
    fns = {"torch.nn": _step(base, case, x, hx, grad, sync),
           "fastrnn": _step(_fastrnn_module(case, base, backend), case, x, hx, grad, sync)}
    if cuda:
        fns = {name: _with_tf32(fn, False) for name, fn in fns.items()}
        if case.dtype == "fp32":  # TF32 changes nothing in 16-bit: the same call timed twice
            fns["torch.nn TF32"] = _with_tf32(_step(base, case, x, hx, grad, sync), True)
        for name, m in _extra_baselines(case, device).items():
            fns[name] = _with_tf32(_step(m, case, x, hx, grad, sync), False)
    if reference:
        fns["reference"] = _step(_fastrnn_module(case, base, "reference"), case, x, hx, grad, sync)
    return fns


# --- what ran ----------------------------------------------------------------------------------

def auto_signature(case, device, backend="auto"):
    """The autotune signature fastrnn's call of `case` decides by (TF32 off, as bench runs it):
    only for auto on CUDA, else None."""
    if backend != "auto" or torch.device(device).type != "cuda":
        return None
    from .tune import case_signature
    return case_signature(case, tf32=False)


def auto_decision(case, device, backend="auto"):
    """auto's decision record for `case` on CUDA `device` ({"choice", "times_ms", "excluded"}; just
    {"choice"} under FASTRNN_AUTOTUNE=0), or None off CUDA / auto."""
    from . import autotune, tunecache
    sig = auto_signature(case, device, backend)
    if sig is None:
        return None
    if not autotune.enabled():
        return {"choice": autotune.static_choice(sig).label}
    return tunecache.for_device(device).get(autotune.cache_key(sig))


def launch_strategies(case, device, backend="auto"):
    """What fastrnn runs `case` on: {"backend": the concrete backend `backend` resolves to on
    `device` (on CUDA, auto's decision for the case), then `triton_strategies`' keys}, which are
    None (False) off triton."""
    with torch.set_grad_enabled(case.mode == "train"):  # auto on CPU asks whether torch's op runs so
        concrete, strategy = backends.choose(backend, torch.empty(0, device=device, dtype=case.torch_dtype),
                                             check=False, mode=case.torch_mode,
                                             signature=auto_signature(case, device, backend))
    if concrete != "triton":
        return {"backend": concrete, "fwd": None, "bwd": None, "fallback": False}
    return {"backend": concrete, **triton_strategies(case, device, strategy)}


def triton_strategies(case, device, strategy=None):
    """{"fwd": the triton launch strategy of each layer's forward, "bwd": of its backward (None
    unless train), "fallback": whether a split may run as stepwise} for `case` on `device`.

    Derived as the kernels derive it, from kernels/config.py's launch_config with the case's B, H,
    R (= H: no case projects), dtype and directions on `device`, FASTRNN_TRITON_STRATEGY included.
    A split the heuristic chose runs as stepwise when the GPU cannot hold its grid at once; that is
    decided at launch (kernels/recurrence.py), so "fallback" can only say that it may happen.
    `strategy` (auto's choice) overrides the heuristic as rnn_stack's config does."""
    from .kernels.config import launch_config
    cell, D, train = case.kernel_cell, 2 if case.bidirectional else 1, case.mode == "train"
    fallback = False

    def per_layer(pass_):
        nonlocal fallback
        save = pass_ == "fwd" and train and cell == "lstm"  # the LSTM forward saves gates for backward
        cfgs = [launch_config(cell, pass_, case.B, case.H, case.H, case.torch_dtype, device, save=save,
                              directions=D, override=strategy and {"STRATEGY": strategy})
                for _ in range(case.layers)]
        fallback = fallback or any(c["FALLBACK"] for c in cfgs)
        return [c["STRATEGY"] for c in cfgs]

    fwd, bwd = per_layer("fwd"), per_layer("bwd") if train else None
    return {"fwd": fwd, "bwd": bwd, "fallback": fallback}


def strategy_text(plan):
    """The table's cell: 'split' (forward), 'split/split' (forward/backward), layers that differ
    joined by ',', '*' where a split may fall back to stepwise; '(aten)' and the like off triton."""
    if plan["fwd"] is None:
        return f"({plan['backend']})"
    text = "/".join(",".join(dict.fromkeys(p)) for p in (plan["fwd"], plan["bwd"]) if p is not None)
    return text + ("*" if plan["fallback"] else "")


def torch_nn_kernel(fn):
    """Which of torch's RNN kernels one call of `fn` reaches: 'cudnn', 'mkldnn' (oneDNN, CPU) or
    'native' (torch's own loop over its fused cells)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func._overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Ops() as ops:
        fn()
    if "_cudnn_rnn" in ops.names:
        return "cudnn"
    return "mkldnn" if any(n.startswith("mkldnn_rnn") for n in ops.names) else "native"


# --- timing ------------------------------------------------------------------------------------
def time_callables(fns, *, samples=7, min_sample_s=0.02, warmup=2):
    """{name: [seconds per call, one per sample]}: warm each callable up, size its inner loop to
    ~min_sample_s, then take `samples` samples round-robin (rotating who goes first)."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1 (a median needs one), got {samples}")
    loops = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        loops[name] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - t0, 1e-7)))
    names, out = list(fns), {name: [] for name in fns}
    for s in range(samples):
        for name in names[s % len(names):] + names[:s % len(names)]:
            fn, n = fns[name], loops[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out[name].append((time.perf_counter() - t0) / n)
    return out


def peak_memory(fn, device):
    """Bytes allocated at the peak of one call, above what was allocated before it (CUDA)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    return torch.cuda.max_memory_allocated(device) - before


def wants_reference(case):
    """The reference loop is slow; time it only on the cheap cases."""
    return case.T <= 64 and case.H <= 256 and case.B <= 16 and case.layers == 1


def run_case(case, device, *, samples, min_sample_s, backend="auto", reference=False):
    fns = make_callables(case, device, backend=backend, reference=reference and wants_reference(case))
    times = time_callables(fns, samples=samples, min_sample_s=min_sample_s)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    # Noise: the spread of the per-round ratios (each round times both back to back), so a
    # verdict of "slower" can be told apart from a busy machine.
    ratios = sorted(a / b for a, b in zip(times["torch.nn"], times["fastrnn"]))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    result = {**case.as_dict(), "median_s": medians, "samples_s": times,
              "speedup": medians["torch.nn"] / medians["fastrnn"],
              "noise": (q3 - q1) / statistics.median(ratios),
              "strategy": launch_strategies(case, device, backend)}
    if torch.device(device).type == "cuda":
        result["torch_nn_kernel"] = torch_nn_kernel(fns["torch.nn"])
        result["peak_bytes"] = {name: peak_memory(fns[name], device) for name in ("torch.nn", "fastrnn")}
        result["auto"] = auto_decision(case, device, backend)
    return result


# --- reporting ---------------------------------------------------------------------------------
def environment(device):
    device = torch.device(device)
    env = {"device": device.type, "python": platform.python_version(), "torch": torch.__version__,
           "platform": platform.platform(), "threads": torch.get_num_threads()}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    from . import __version__
    env["fastrnn"] = __version__
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"], env["cudnn"] = torch.version.cuda, torch.backends.cudnn.version()
    else:
        env["device_name"] = _cpu_name()
        env["cores"] = os.cpu_count()
    return env


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def at_parity(result, tol):
    """fastrnn no slower than torch.nn beyond `tol` or the measured noise, whichever is larger."""
    return result["speedup"] >= 1 - max(tol, result["noise"])


def format_table(results, env, parity_tol):
    cols = ["case", "strategy", "torch.nn ms", "fastrnn ms", "speed-up", "noise"]
    extra = sorted({n for r in results for n in r["median_s"]} - {"torch.nn", "fastrnn"})
    cols += [f"{n} ms" for n in extra]
    cuda = env["device"] == "cuda"
    if cuda:
        cols += ["torch.nn kernel", "torch.nn peak MiB", "fastrnn peak MiB", "auto", "auto's candidates ms"]
    rows = []
    for r in results:
        m = r["median_s"]
        flag = "" if at_parity(r, parity_tol) else " !"
        row = [r["id"], strategy_text(r["strategy"]), _ms(m["torch.nn"]), _ms(m["fastrnn"]),
               f"{r['speedup']:.2f}x{flag}", f"±{r['noise']:.0%}"]
        row += [_ms(m.get(n)) for n in extra]
        if cuda:
            row += [r["torch_nn_kernel"]] + [f"{r['peak_bytes'][n] / 2**20:.1f}" for n in ("torch.nn", "fastrnn")]
            auto = r.get("auto") or {}
            row += [auto.get("choice", "-"), " ".join(f"{k}={v:.3f}" for k, v in auto.get("times_ms", {}).items())
                    or "-"]
        rows.append(row)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    head = f"device: {env['device']} ({env['device_name']}), torch {env['torch']}, {env['threads']} threads"
    legend = ("strategy: fastrnn's triton launch strategy, forward/backward (* a split that may run as "
              "stepwise); (name): the backend fastrnn ran instead of triton")
    if cuda:
        from .autotune import T_CAP
        legend += (f"\nauto: what backend='auto' chose for the case on this GPU; auto's candidates ms: each "
                   f"candidate's time as auto measured it (T capped at {T_CAP}; excluded ones are missing)")
    return "\n".join([head, line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows] + [legend])


def _progress(cases):
    """Iterate `cases` with a progress bar: tqdm when installed, else one plain line per case."""
    try:
        from tqdm import tqdm
        yield from tqdm(cases, desc="bench", unit="case", file=sys.stderr)
        return
    except ImportError:
        pass
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] {case.id}", file=sys.stderr, flush=True)
        yield case


def plot(results, path, parity_tol):
    """Bars of the speed-ups: green faster, grey at parity (within tolerance or noise), red slower."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(results) + 1.5))
    ids, speed = [r["id"] for r in results], [r["speedup"] for r in results]
    colors = ["tab:red" if not at_parity(r, parity_tol) else "tab:green" if r["speedup"] >= 1 else "tab:gray"
              for r in results]
    ax.barh(ids, speed, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speed-up over torch.nn (higher is better)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- CLI ---------------------------------------------------------------------------------------
def timing_device(text):
    """argparse type of a device option: a torch.device this machine can time on (cpu or cuda)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (use cpu or cuda)") from None
    if device.type == "meta":
        raise argparse.ArgumentTypeError(
            f"{text!r}: nothing can be timed on the meta device (its tensors hold no data); use cpu or cuda")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: bench times on cpu or cuda")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "no CUDA device is visible" if torch.backends.cuda.is_built() else "this torch has no CUDA"
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available here ({why}); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _checked(convert, ok, expected):
    """An argparse type: `convert` the text and keep the value only if `ok(value)`."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_milliseconds = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_tolerance = _checked(float, lambda v: 0 <= v < 1, "a fraction in [0, 1), e.g. 0.05")
_case_filter = _checked(str, lambda v: any(v.split(",")), "comma-separated parts of case ids")


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true", help="the quick subset (CPU-friendly)")
    parser.add_argument("--device", type=timing_device, default=None,
                        help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--json", default=None, help="output path (default bench-results/bench-<device>.json)")
    parser.add_argument("--plot", nargs="?", const="", default=None,
                        help="save a PNG chart of the speed-ups (default path: next to the JSON)")
    parser.add_argument("--samples", type=_positive_int, default=9, help="timed samples per implementation")
    parser.add_argument("--min-sample-ms", type=_milliseconds, default=15.0, help="minimum length of one sample")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference backend's column")
    parser.add_argument("--parity-tol", type=_tolerance, default=0.05,
                        help="flag cases where fastrnn is slower than torch.nn by more than this "
                             "(or the measured noise, if larger)")
    # For tests and debugging: filter cases by id substrings, cap their number, pick a backend.
    parser.add_argument("--cases", type=_case_filter, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--max-cases", type=_positive_int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=backends.BACKENDS, default="auto", help=argparse.SUPPRESS)
    # main reports misuse that only shows once options meet (or the machine) the way argparse does
    parser.set_defaults(usage_error=parser.error)


def _backend_problem(backend, device, cases):
    """Why `backend` cannot run `cases` on `device`, or None: asked before the timing, not after."""
    try:
        for dtype in sorted({c.torch_dtype for c in cases}, key=str):
            backends.resolve(backend, torch.empty(0, device=device, dtype=dtype))
        for case in cases:
            launch_strategies(case, device, backend)
    except (backends.BackendError, ValueError) as exc:  # a bad FASTRNN_BACKEND or FASTRNN_TRITON_STRATEGY
        return str(exc)
    return None


def _unwritable(path):
    """Why a file cannot be written at `path`, or None: asked before the timing, not after."""
    if os.path.isdir(path):
        return "is a directory"
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        return f"cannot create {parent}: {exc.strerror or exc}"
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return "not writable"
    return None


def main(args):
    """Run `bench` on `args` parsed by a parser that add_arguments filled."""
    fail = args.usage_error  # prints usage and one error line, exits 2
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401  (fail before an hour of timing, not after)
        except ImportError:
            fail("--plot needs matplotlib (pip install matplotlib)")
    cases = registry.quick(device) if args.quick else registry.full_grid(device)
    cases = registry.select(cases, args.cases, args.max_cases)
    if not cases:
        fail(f"--cases: no case matches {args.cases!r}")
    why = _backend_problem(args.backend, device, cases)
    if why:
        fail(f"--backend {args.backend}: {why}")
    path = args.json or os.path.join("bench-results", f"bench-{device.type}.json")
    png = None if args.plot is None else args.plot or os.path.splitext(path)[0] + ".png"
    for flag, out in (("--json", path), ("--plot", png)):
        why = out and _unwritable(out)
        if why:
            fail(f"{flag} {out}: {why}")

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        env = environment(device)
        results = [run_case(c, device, samples=args.samples, min_sample_s=args.min_sample_ms / 1e3,
                            backend=args.backend, reference=not args.no_reference and device.type == "cpu")
                   for c in _progress(cases)]
    finally:
        torch.set_num_threads(threads)  # main may run in-process (tests): leave torch as it was
    print(format_table(results, env, args.parity_tol))
    slow = [r["id"] for r in results if not at_parity(r, args.parity_tol)]
    print(f"fastrnn at parity (within {args.parity_tol:.0%} or the noise) or faster on "
          f"{len(results) - len(slow)}/{len(results)} cases")
    settings = {"samples": args.samples, "min_sample_ms": args.min_sample_ms, "backend": args.backend,
                "quick": args.quick, "tf32_baseline": "torch.nn runs with TF32 off; 'torch.nn TF32' with it on"}
    with open(path, "w") as f:
        json.dump({"environment": env, "settings": settings, "results": results}, f, indent=1)
    print(f"wrote {path}")
    if png is not None:
        plot(results, png, args.parity_tol)
        print(f"wrote {png}")
    return 0
