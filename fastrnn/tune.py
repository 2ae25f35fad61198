"""`python -m fastrnn tune`: make backend="auto"'s decisions ahead of time on this GPU.

For every case of the benchmark registry (fastrnn/registry.py; `--registry quick` or `full`,
`--cases` to filter), `fastrnn.autotune.decide` measures and verifies the candidates of the case's
signature, as a first call of that signature would, and stores the decision in the cache file that
later processes read (fastrnn/tunecache.py); cases already decided are listed, not measured again.
The signatures use torch's TF32 settings as this process has them (fp32 cases under TF32, torch's
default for cuDNN, are decided apart from those without). There is nothing to tune on a machine
without CUDA (auto on CPU runs torch's own kernels without measuring): the command says so and
exits with status 1.
"""
import argparse
import sys

import torch

from . import autotune, registry


def case_signature(case, tf32=None):
    """The autotune Signature of a registry case (I = H, packed cases have lengths); `tf32` None reads
    torch's flags now, else true: both TF32 flags on (fp32 only), false: both off."""
    sig = autotune.signature(case.torch_mode, T=case.T, B=case.B, I=case.H, H=case.H, layers=case.layers,
                             bidirectional=case.bidirectional, dtype=case.torch_dtype,
                             training=case.mode == "train", lengths=case.packed)
    return sig if tf32 is None else sig._replace(tf32="cudnn+matmul" if tf32 and sig.dtype == "float32" else "")


def cuda_device(text):
    """argparse type of --device: a CUDA device this machine has."""
    from .bench import timing_device
    device = timing_device(text)
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(f"{text!r}: tune measures on CUDA GPUs only (auto on CPU needs no tuning)")
    return device


def add_arguments(parser):
    from .bench import _case_filter
    parser.add_argument("--registry", choices=("quick", "full"), default="quick",
                        help="which cases of the benchmark registry to decide (default: quick)")
    parser.add_argument("--device", type=cuda_device, default=None, help="the CUDA device (default: the current one)")
    parser.add_argument("--cases", type=_case_filter, default=None,
                        help="only cases whose id contains every comma-separated part, e.g. lstm,bf16")
    parser.set_defaults(usage_error=parser.error)


def describe(record):
    """(candidate times, exclusions) of a decision record as two short texts."""
    times = ", ".join(f"{label} {ms:.3f}" for label, ms in record.get("times_ms", {}).items()) or "-"
    excluded = "; ".join(f"{label}: {why}" for label, why in record.get("excluded", {}).items()) or "-"
    return times, excluded


def main(args):
    from . import tunecache
    fail = args.usage_error  # prints usage and one error line, exits 2
    try:
        if not autotune.enabled():
            fail(f"{autotune.ENV}=0 is set, so auto decides by its static rule and reads no decisions; "
                 "unset it to tune")
    except ValueError as exc:
        fail(str(exc))
    if args.device is None and not torch.cuda.is_available():
        print("fastrnn tune: no CUDA device is visible, so there is nothing to tune: backend='auto' measures "
              "only on CUDA GPUs (on CPU it runs torch's own kernels, or the reference, without measuring)",
              file=sys.stderr)
        return 1
    device = args.device or torch.device("cuda", torch.cuda.current_device())
    cases = registry.quick(device) if args.registry == "quick" else registry.full_grid(device)
    cases = registry.select(cases, args.cases)
    if not cases:
        fail(f"--cases: no case of the {args.registry} registry matches {args.cases!r}")
    cache = tunecache.for_device(device)
    print(f"fastrnn tune on {device} ({cache.identity['gpu']}): {len(cases)} cases of the {args.registry} "
          f"registry; decisions in {cache.path}")
    rows = []
    with torch.cuda.device(device):
        for case in cases:
            sig = case_signature(case)
            key = autotune.cache_key(sig)
            known = cache.get(key) is not None
            autotune.decide(sig, device)
            record = cache.get(key)
            rows.append((case.id, record["choice"], "cached" if known else "measured", *describe(record)))
    titles = ("case", "auto", "how", "candidates ms", "excluded")
    widths = [max(len(r[i]) for r in rows + [titles]) for i in range(len(titles))]
    for row in [titles] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0
