"""`python -m fastrnn check`: the oracle's battery for every fastrnn backend and torch.nn, here.

Runs `fastrnn.testing.check_module` on fastrnn.RNN / LSTM / GRU with each backend that can run
on the device, and on torch.nn.RNN / LSTM / GRU, prints a pass/fail table with the max errors
against the float64 reference, and exits with status 1 on any failure. A user with a GPU verifies
the kernels on their own hardware in one command.

On a CPU the "triton" backend runs through Triton's interpreter, which Triton reads when a kernel
is decorated (when fastrnn.kernels is first imported). If TRITON_INTERPRET is unset and the kernels
are not imported yet, this command sets TRITON_INTERPRET=1 itself; otherwise the triton rows fail
and say how to rerun.
"""
import argparse
import functools
import math
import os
import sys

import torch

from .bench import _checked, timing_device

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
IMPLS = ("torch", "reference", "aten", "triton")  # "torch" is torch.nn itself
KINDS = ("RNN", "LSTM", "GRU")  # torch.nn's classes, checked in this order

# A negative tolerance fails equal values; a NaN one fails everything, and an infinite rtol too
# where the expected value is 0 (inf * 0 is NaN).
_tolerance = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_case_part = _checked(str, bool, "a non-empty part of a case id")  # '' is in every id: no filter at all


def check_device(text):
    """argparse type of --device: cpu, or cuda when this machine has it (bench's `timing_device`
    asks both), or another torch device that can hold a tensor here. Never meta: its tensors hold
    no values, so there is nothing to compare."""
    try:
        kind = torch.device(text).type
    except (RuntimeError, ValueError):
        kind = None  # timing_device says it is not a torch device
    if kind in (None, "cpu", "cuda"):
        return timing_device(text)
    if kind == "meta":
        raise argparse.ArgumentTypeError(
            f"{text!r}: meta tensors hold no values, so there is nothing to check; use cpu or cuda")
    try:
        torch.empty(1, device=text)
    except Exception as exc:  # whatever the device's runtime says is the reason
        why = (str(exc).splitlines() or [""])[0]
        raise argparse.ArgumentTypeError(f"{text!r}: cannot hold tensors here ({type(exc).__name__}: {why})") from None
    return torch.device(text)


def add_arguments(parser):
    parser.add_argument("--device", type=check_device, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device to check on (default: cuda if available, else cpu)")
    parser.add_argument("--backend", action="append", choices=IMPLS, dest="backends", metavar="NAME",
                        help=f"check only this implementation (repeatable; one of {', '.join(IMPLS)}; "
                             "default: torch.nn and every fastrnn backend that can run here)")
    parser.add_argument("--dtype", choices=tuple(DTYPES),
                        help="dtype of the checked modules (default: float64, float32 for triton)")
    parser.add_argument("--quick", action="store_true", help="about half of the battery")
    parser.add_argument("--cases", action="append", type=_case_part, metavar="SUBSTRING",
                        help="only cases whose id contains SUBSTRING (repeatable), e.g. packed, LSTM-T1")
    parser.add_argument("--atol", type=_tolerance, help="override the absolute tolerance (finite, >= 0)")
    parser.add_argument("--rtol", type=_tolerance, help="override the relative tolerance (finite, >= 0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case, not only a summary")
    # main reports misuse that only shows once options meet the way argparse does
    parser.set_defaults(usage_error=parser.error)


def unavailable_reason(impl, device, dtype=None):
    """Why `impl` cannot run on `device` (in `dtype`, when given) here, or None when it can."""
    return _missing(impl) or _ruled_out(impl, device, dtype)


def _missing(impl):
    """What this fastrnn or this machine lacks to run `impl` at all, or None."""
    from .backends import BACKENDS, triton_available
    if impl == "torch" or impl == "reference":
        return None
    if impl not in BACKENDS:
        return f"this fastrnn has no {impl!r} backend"
    if impl == "triton" and not triton_available():
        return "the triton package is not installed"
    return None


def _ruled_out(impl, device, dtype):
    """Why the options rule `impl` out on any machine, or None: the Triton kernels run on cuda
    (and cpu under the interpreter) in the dtypes fastrnn.backends lists. Ask after `_missing`."""
    from .backends import BackendError, check_triton
    if impl != "triton":
        return None
    if torch.device(device).type not in ("cuda", "cpu"):
        return f"Triton does not run on {device}"
    if dtype is not None:
        try:
            check_triton(torch.empty(0, device="meta", dtype=dtype))  # on meta it asks about the dtype alone
        except BackendError as exc:
            return str(exc)
    return None


def _enable_interpreter(impls, device):
    """Set TRITON_INTERPRET=1 for a CPU check of the triton backend, while that still works.
    Returns a note for the header, or ''."""
    if "triton" not in impls or torch.device(device).type != "cpu" or os.environ.get("TRITON_INTERPRET"):
        return ""
    if "fastrnn.kernels" in sys.modules:
        return "(TRITON_INTERPRET unset and fastrnn.kernels already imported: triton cannot run on CPU)"
    os.environ["TRITON_INTERPRET"] = "1"
    return "(this command set TRITON_INTERPRET=1 so the triton kernels run on CPU)"


def _factories(impl):
    """[(label, kind, factory)] for the RNN, the LSTM and the GRU of one implementation."""
    if impl == "torch":
        return [(f"torch.nn.{kind}", kind, getattr(torch.nn, kind)) for kind in KINDS]
    import fastrnn
    return [(f"fastrnn.{kind}[{impl}]", kind, functools.partial(getattr(fastrnn, kind), backend=impl))
            for kind in KINDS]


def _cell_missing(impl, kind):
    """Why `impl` has no implementation of the cell `kind` in this fastrnn, or None: the triton
    backend runs a cell whose fused op (fastrnn.fused.<cell>_directions) exists. Imports the kernels:
    ask after `_enable_interpreter`."""
    if impl != "triton":
        return None
    from . import cellspec, fused
    cell = next(c for c in cellspec.CELLS if c.torch_name == kind)
    return None if hasattr(fused, cell.fused_directions) else f"fastrnn.fused has no {cell.fused_directions}"


def _fmt(err):
    return "-" if math.isnan(err) else f"{err:.2e}"  # nan: no case produced a comparable output


def main(args):
    from .testing import check_module, default_cases

    fail = args.usage_error  # prints usage and one error line, exits 2
    device = args.device
    battery = {kind: default_cases(kind, args.quick) for kind in KINDS}
    for part in args.cases or ():  # a SUBSTRING that selects nothing is a typo, not a filter
        if not any(part in case.id for cases in battery.values() for case in cases):
            fail(f"--cases: no case id{' of the --quick battery' if args.quick else ''} contains {part!r}")
    explicit = bool(args.backends)
    impls = list(dict.fromkeys(args.backends or IMPLS))
    dtypes = {impl: DTYPES[args.dtype] if args.dtype else (torch.float32 if impl == "triton" else torch.float64)
              for impl in impls}
    for impl in impls if explicit else ():  # --backend triton --dtype float64: no machine runs that
        why = not _missing(impl) and _ruled_out(impl, device, dtypes[impl])
        if why:
            fail(f"--backend {impl}: {why}")
    note = _enable_interpreter(impls, device)
    header = (f"fastrnn check on {device}: torch {torch.__version__}"
              + (f", TRITON_INTERPRET={os.environ['TRITON_INTERPRET']}" if os.environ.get("TRITON_INTERPRET") else ""))
    print(header + (f" {note}" if note else ""))
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    if torch.device(device).type == "cuda" and tf32:
        # TF32 rounds fp32 matmul inputs to 10 mantissa bits: by design outside fp32 tolerances.
        print("note: TF32 is allowed (torch.backends.cuda.matmul / cudnn .allow_tf32); float32 rows "
              "measure TF32 rounding too. The float64 rows are unaffected.")

    rows, reports, failed = [], [], False
    for impl in impls:
        dtype = dtypes[impl]
        reason = unavailable_reason(impl, device, dtype)
        if reason is not None:
            # Asked for by name: a failure. Found unavailable while listing: say so and go on.
            failed |= explicit
            rows.append((f"{impl}", "-", "-", "-", "-", "-", f"{'FAIL' if explicit else 'SKIP'}: {reason}"))
            continue
        for label, kind, factory in _factories(impl):
            cases = battery[kind]
            if args.cases:  # --cases LSTM-T1 selects no RNN case: that row is left out
                cases = [c for c in cases if any(s in c.id for s in args.cases)]
                if not cases:
                    continue
            reason = _cell_missing(impl, kind)
            if reason is not None:  # as for a backend that cannot run here
                failed |= explicit
                rows.append((label, kind, "-", "-", "-", "-", f"{'FAIL' if explicit else 'SKIP'}: {reason}"))
                continue
            report = check_module(factory, dtype=dtype, device=device, cases=cases, kind=kind,
                                  atol=args.atol, rtol=args.rtol, name=label, raise_on_failure=False)
            reports.append(report)
            failed |= not report.passed
            n_pass = len(report.results) - len(report.failed)
            rows.append((label, report.kind, str(dtype).replace("torch.", ""), f"{n_pass}/{len(report.results)}",
                         _fmt(report.max_abs), _fmt(report.max_rel), "PASS" if report.passed else "FAIL"))

    if args.verbose:
        for report in reports:
            print("\n" + report.table())
        print()
    titles = ("implementation", "kind", "dtype", "passed", "max abs", "max rel", "result")
    widths = [max(len(str(r[i])) for r in rows + [titles]) for i in range(len(titles))]
    for row in [titles] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    for report in reports:
        if not report.passed:
            print("\n" + report.failure_message())
    print(f"\n{'FAILED' if failed else 'all passed'}")
    return 1 if failed else 0
