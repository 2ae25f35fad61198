"""`python -m fastrnn sweep`: re-derive the TUNED table of kernels/config.py.

ptxas sometimes keeps a hoisted address or two on the stack (8-16 bytes) at 64-128 registers, and
where it does depends on num_warps and the tiles in ways no rule predicts. For each kind of kernel
that TUNED can key (cell, pass, projection, fp32 or 16-bit weights, BLOCK_B, saves for backward),
this compiles the kernel for sm_80 and sm_90 with every setting of the flags that do not change
tiles (relu, TF32; direction and lengths too, which are runtime arguments of one binary and so
add no compiles) and reports the first of CANDIDATES under which none spills
or overflows shared memory. Streamed weights (H = 256; the Elman backward at H = 32 too) only:
resident-weight kernels are not tuned.
TUNED applies to the "rows" strategy only, so every launch here forces it (at H = 256 the heuristic
would pick "split").

Rerun it when Triton (and so ptxas) changes, paste the printed table into kernels/config.py, then
confirm with `python -m fastrnn inspect --flags all --strategy rows`. Kinds whose base setting is
clean take one round. With the GRU, when direction and lengths were still compiled in: about 2300
compiles, 72 minutes on 2 shared cores; now 5 minutes on 2 cores with part of them cached.
"""
import itertools
import time
import warnings

import triton

from . import inspection as ins
from .bench import _positive_int

# (num_warps, BLOCK_K, BLOCK_H, maxnreg); BLOCK_H None keeps the cell's default, maxnreg None leaves
# ptxas its own register budget. The first is the base. The last ones state a budget of all 255
# registers: ptxas then stops keeping values on the stack for occupancy's sake, at the cost of the
# occupancy, so they come after every setting that is clean without one.
CANDIDATES = [(4, 16, None, None), (8, 16, None, None), (4, 32, None, None), (8, 32, None, None),
              (2, 16, 16, None), (4, 16, 16, None), (8, 32, 16, None), (4, 16, 16, 255), (2, 16, 16, 255)]
# streamed W_hh for every cell and dtype (any H above the resident limit compiles the same), and for
# the Elman backward H = 32 too, whose BLOCK_H (32) is the only default narrower than at H = 256
H = 256
NARROW_H = 32
BS = {16: (1, 16), 32: (64,)}  # BLOCK_B -> batch sizes that get it (B = 1 is its own specialization)


def kinds(cells=ins.CELLS, kinds_of_dtype=("fp32", "bf16")):
    """[(TUNED key, [Case, ...])]: every launch of one kind, over all flag settings and batches.
    bf16 stands for both 16-bit dtypes (fp16 compiles the same code; inspect checks both)."""
    out = []
    for cell in cells:
        base = ins.kernel_cell(cell)
        saving = [] if ins.description(cell).from_output else [("fwd", True)]
        passes = [("fwd", False), ("bwd", True)] + saving
        for (pass_, train), dtype, block_b in itertools.product(passes, kinds_of_dtype, BS):
            flags = itertools.product((False, True), (False, True), (False, True) if base == "elman" else (False,),
                                      (False, True) if dtype == "fp32" else (False,))
            hs = (NARROW_H, H) if (base, pass_) == ("elman", "bwd") else (H,)
            cases = [ins.Case(cell, pass_, dtype, B, h, train, rev, lens, relu, tf32, "rows")
                     for (rev, lens, relu, tf32), B, h in itertools.product(list(flags), BS[block_b], hs)]
            key = (base, pass_, cell == "lstm-proj", "fp32" if dtype == "fp32" else "16-bit", block_b,
                   ins.saves(cases[0]))
            out.append((key, cases))
    return out


def override(candidate):
    num_warps, block_k, block_h, maxnreg = candidate
    settings = dict(num_warps=num_warps, BLOCK_K=block_k)
    if block_h is not None:
        settings["BLOCK_H"] = block_h
    if maxnreg is not None:
        settings["maxnreg"] = maxnreg
    return settings


def first_clean(cases, archs=ins.ARCHS, processes=2):
    """(index of the first clean candidate or None, compiles run) for one kind."""
    k, compiles = ins.jit_kernels(), 0
    widest = k.config.BLOCK_H[ins.kernel_cell(cases[0].cell)]
    for i, candidate in enumerate(CANDIDATES):
        settings = override(candidate)
        # BLOCK_H and maxnreg: the candidate's, else the heuristic's before TUNED (not whatever TUNED
        # says today: a maxnreg left there made a candidate without one look clean)
        at = {case.H: {"BLOCK_H": min(widest, max(16, triton.next_power_of_2(case.H))), "maxnreg": None,
                       **settings} for case in cases}
        jobs = list(dict.fromkeys(ins.specialize(case, arch, k, at[case.H]) for case in cases for arch in archs))
        compiles += len(jobs)
        if all(r["ok"] for r in ins.run_jobs(jobs, processes)):
            return i, compiles
    return None, compiles


def add_arguments(parser):
    parser.add_argument("--cell", action="append", choices=ins.CELLS, dest="cells",
                        help="only this cell (repeatable)")
    parser.add_argument("--jobs", type=_positive_int, default=2, help="compile processes (default: 2)")


def main(args):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
        start, lines, unsolved = time.perf_counter(), [], 0
        # a repeated --cell sweeps its kinds once (else their TUNED lines would print twice)
        for key, cases in kinds(tuple(dict.fromkeys(args.cells or ins.CELLS))):
            found, compiles = first_clean(cases, processes=args.jobs)
            verdict = "none clean" if found is None else ("base" if found == 0 else str(override(CANDIDATES[found])))
            print(f"{key}: {verdict} ({compiles} compiles)", flush=True)
            unsolved += found is None
            if found:
                settings = ", ".join(f"{k}={v}" for k, v in override(CANDIDATES[found]).items())
                lines.append(f"    {key!r}: dict({settings}),")
    print("TUNED = {")
    print("\n".join(lines))
    print("}")
    print(f"{unsolved} kind(s) with no clean candidate, {time.perf_counter() - start:.0f} s")
    return 1 if unsolved else 0
