"""`python -m fastrnn inspect --estimate`: what one time step of each fused kernel costs on an H100
(sm_90), from its compiled SASS and its launch configuration: a static bound and a model, not a timing.

For a shape and a pass (forward inference, forward training, backward) this compiles the kernel a
GPU launch would (fastrnn/inspection.py), finds its time loop in the SASS (fastrnn/sass.py) and
counts the warp-instructions one step issues per warp, every loop weighted by its trips:

- the time loop iterates once per sub-step (as many per step as the launch counts: 1, 2 with a
  projection), so its own instructions count once per sub-step, both sides of every branch
  included (an upper bound), and with rows each hidden-tile loop, which one sub-step runs, once
  per step (split and stepwise have no tile loop: a tile's code is the time loop's own, counted
  once per sub-step, which over-counts with a projection);
- a grid barrier's spin loop (acquire loads or atomics): 0 trips, the wait is the model's
  barrier term, not issue;
- hidden-tile loops (rows only: a split or stepwise program's one tile is straight code, see
  kernels/common.py `own_tiles`): cdiv(H, BLOCK_H) or cdiv(R, BLOCK_H) trips;
- streamed weight loops (`for k0 in range(0, K, BLOCK_K)`, one tl.dot per iteration):
  cdiv(K, BLOCK_K) // u trips, where u, the unroll factor, is the multiply-adds the loop body's
  HMMA / HGMMA (or, for an IEEE fp32 dot, FFMA) instructions do over the multiply-adds of one dot;
  a remainder left by unrolling is straight code in the parent, counted there;
- the backward's sum of the programs' shares of dh (`for q in range(programs)`, one FADD per
  element of a [BLOCK_B, BLOCK_H] tile): LLVM may unroll it, leaving a remainder loop or straight
  code; each of its (one or two) loops gets the programs the loops before it left, over its
  unroll u (its FADDs over one iteration's).
LAYOUT says which loops each kernel holds, in address order. When the SASS holds other loops, or a
body's count does not divide, the row says n/a and why instead of guessing.

Issue bound: an SM's 4 schedulers issue one warp-instruction per cycle each and one warp issues at
most one per cycle, so a step takes at least max(N * warps / 4, N) cycles, at CLOCK_GHZ, times the
programs an SM holds. Model = issue bound + grid barriers x BARRIER_US + launches x LAUNCH_US +
dependent L2 round trips x L2_TRIP_US: split has a grid barrier per sub-step, stepwise a launch,
rows a CTA barrier (tens of cycles: not counted); every strategy has one dependent L2 trip per
sub-step, the exchanged state read after the barrier (a streamed K loop's loads do not depend on
one another and are pipelined: they add bytes, not trips). Bytes per step (step_bytes) are
reported beside it, with the time an SM needs to read its share at L2_BYTES_PER_CYCLE, but kept
out of the model.
"""
import argparse
import dataclasses
import json
import re
import warnings
from collections import namedtuple
from types import SimpleNamespace

from . import inspection as ins
from . import sass
from .bench import _unwritable
from .kernels.config import programs_per_sm

ARCH = 90
CLOCK_GHZ = 1.755  # H100 SXM boost clock
SMS = 132  # H100 SXM
# What kernels/config.py's programs_per_sm reads from torch.cuda.get_device_properties, for an H100
H100 = SimpleNamespace(max_threads_per_multi_processor=2048, regs_per_multiprocessor=65536,
                       shared_memory_per_multiprocessor=233472)
# /work/shared/SPLIT_FEASIBILITY.md, assumed there and not measured: an L2 hit takes 250-500 cycles
# (we take the middle, 375), a grid barrier round trip about 3 L2 trips, 0.5-1 us (we take 0.75),
# and an SM reads from L2 at about 64 B per cycle.
L2_TRIP_US = 375 / (CLOCK_GHZ * 1e3)
BARRIER_US = 0.75
L2_BYTES_PER_CYCLE = 64
# stepwise launches a kernel per sub-step; assumed (not measured here): a Triton launch from Python
# costs about 4 us of CPU, which a step shorter than that cannot hide
LAUNCH_US = 4.0

SHAPES = {"a": "lstm:B=16:H=768:bf16", "b": "lstm:B=64:H=256:fp32", "c": "lstm:B=256:H=1024:bf16",
          "d": "lstm:B=1:H=512:fp32", "e": "elman:B=64:H=256:fp32", "a-gru": "gru:B=16:H=768:bf16"}
# pass -> (kernel pass, training): the forward saves for backward in training
PASSES = {"fwd-infer": ("fwd", False), "fwd-train": ("fwd", True), "bwd": ("bwd", True)}
# (pass, projection) -> the hidden-tile loops of one step in address order (kernels/recurrence.py):
# the extent each walks ("H" or "R") and the loops inside it: "W" streams W_hh over R (a dot of
# G * BLOCK_H columns per BLOCK_K; absent when W_RESIDENT), "P" streams W_hr over the extent the
# tile loop does not walk (one gate), "S" sums the programs' shares of dh.
LAYOUT = {("fwd", False): (("H", "W"),),
          ("fwd", True): (("H", "W"), ("R", "P")),
          ("bwd", False): (("R", "S"), ("H", "W")),
          ("bwd", True): (("R", "S"), ("H", "PW"))}

Shape = namedtuple("Shape", "name spec cell B H dtype strategy")
# What the trip rule needs to know of a compiled kernel (its constexprs and launch)
Tiling = namedtuple("Tiling", "pass_ proj strategy G H R BLOCK_B BLOCK_H BLOCK_K warps resident fp32_dot "
                              "programs substeps")


class Unmatched(ValueError):
    """The SASS does not have the loops the rule expects: the count would be a guess."""


def parse_shape(text, name=None):
    """'lstm:B=16:H=768:bf16[:P=384][:S=split]' -> Shape. P (the LSTM projection) must be H / 2,
    the projected case fastrnn/inspection.py compiles; S forces a strategy (default: the heuristic's)."""
    cell, *fields = text.split(":")
    opts = dict(f.split("=", 1) if "=" in f else ("dtype", f) for f in fields)
    try:
        B, H, dtype = int(opts.pop("B")), int(opts.pop("H")), opts.pop("dtype")
        P, strategy = opts.pop("P", None), opts.pop("S", "auto")
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"expected CELL:B=n:H=n:DTYPE[:P=n][:S=strategy], got {text!r}") from None
    problems = [f"unknown field(s) {sorted(opts)}"] if opts else []
    problems += [f"cell {cell!r} is not lstm, gru or elman"] if cell not in ("lstm", "gru", "elman") else []
    problems += [f"dtype {dtype!r} is not one of {', '.join(ins.DTYPES)}"] if dtype not in ins.DTYPES else []
    problems += [f"strategy {strategy!r} is not auto or one of {', '.join(ins.STRATEGIES)}"] \
        if strategy not in ("auto", *ins.STRATEGIES) else []
    if P is not None and (cell != "lstm" or int(P) * 2 != H):
        problems.append("P must be H / 2 (the projected LSTM inspection compiles)")
    if problems:
        raise argparse.ArgumentTypeError(f"{text}: {'; '.join(problems)}")
    return Shape(name or text, text, "lstm-proj" if P else cell, B, H, dtype, strategy)


# ---- the trip rule, on a loop tree from fastrnn/sass.py ------------------------------------------

def step_loop(instrs):
    """The loop one iteration of which is one sub-step: the time loop. stepwise runs the split
    binary one sub-step a launch, its barrier off (kernels/recurrence.py): the same loop, whose
    barrier arrival is then counted though not run (an upper bound)."""
    return sass.outer_loop(sass.loops(instrs))


def _is_spin(loop):
    """The barrier's wait: an innermost loop of acquire loads at GPU scope (LDG...STRONG.GPU, with
    the CCTL that invalidates L1) or atomics."""
    ops = [i.opcode for i in loop.own]
    acquire = (any(op.startswith("LDG") and "STRONG.GPU" in op for op in ops)
               and any(op.startswith("CCTL") for op in ops))
    return not loop.children and (acquire or sass.per_iteration(loop, None)["atom"] > 0)


def _macs(loop, fp32_dot):
    """Multiply-adds one iteration of a childless loop's dot instructions do, per warp."""
    macs = 0
    for i in loop.own:
        base, _, shape = i.opcode.partition(".")
        if base == "HMMA":  # HMMA.16816: m16 n8 k16, one warp
            macs += 16 * 8 * int(shape.split(".")[0][3:])
        elif base == "HGMMA":  # HGMMA.64x128x16: a warpgroup of 4 warps, each issuing it
            m, n, k = map(int, re.match(r"(\d+)x(\d+)x(\d+)", shape).groups())
            macs += m * n * k // 4
        elif base in sass.CLASSES["mma"][0]:
            raise Unmatched(f"{i.opcode} at {i.offset:#x}: no multiply-add count for this instruction")
        elif fp32_dot and base == "FFMA":
            macs += 32
    return macs


def _stream_trips(loop, k, extent, gates):
    """Trips of a streamed weight loop: cdiv(extent, BLOCK_K) over the unroll its body shows."""
    if loop.children:
        raise Unmatched(f"streamed loop {loop.start:#x} holds loops")
    if k.BLOCK_B == 1:
        raise Unmatched("a one-row dot is a reduction (kernels/common.py dot), not one multiply-add per "
                        "instruction: its unroll cannot be read from the SASS")
    one = k.BLOCK_B * gates * k.BLOCK_H * k.BLOCK_K // k.warps  # multiply-adds of one dot, per warp
    body = _macs(loop, k.fp32_dot)
    if body == 0 or body % one:
        raise Unmatched(f"streamed loop {loop.start:#x} does {body} multiply-adds per warp, not a multiple "
                        f"of one dot's {one}")
    return -(-extent // k.BLOCK_K) // (body // one)


def _share_trips(loops, k):
    """Trips of the sum over programs: its main loop, then LLVM's remainder loop if it made one."""
    one = max(1, k.BLOCK_B * k.BLOCK_H // (32 * k.warps))  # FADDs of one iteration, per warp
    trips, left = {}, k.programs
    for loop in loops:
        adds = sum(i.opcode.startswith("FADD") for i in loop.own)
        if loop.children or adds == 0 or adds % one:
            raise Unmatched(f"sum of shares {loop.start:#x}: {adds} FADDs, not a multiple of one iteration's {one}")
        trips[loop.start] = left // (adds // one)
        left -= trips[loop.start] * (adds // one)
    return trips


def trip_counts(step, k):
    """{loop start: trips per step} for every loop under `step` (from step_loop), by the module
    docstring's rule. Raises Unmatched when the loops are not those LAYOUT and `k` (a Tiling) expect."""
    spins = [loop for loop in step.children if _is_spin(loop)]
    others = [loop for loop in step.children if loop not in spins]
    if len(spins) != (k.strategy != "rows"):  # stepwise is the split binary
        raise Unmatched(f"{len(spins)} barrier spin loop(s) in a {k.strategy} step")
    layout = [(walks, inner.replace("W", "") if k.resident else inner) for walks, inner in LAYOUT[(k.pass_, k.proj)]]
    trips = dict.fromkeys((loop.start for loop in spins), 0)
    if k.strategy == "rows":  # a loop over the hidden tiles around each group of inner loops
        if len(others) != len(layout):
            raise Unmatched(f"{len(others)} hidden-tile loops in the step, expected {len(layout)}")
        for tile, (walks, inner) in zip(others, layout):
            trips[tile.start] = -(-(k.H if walks == "H" else k.R) // k.BLOCK_H)
            _inner_trips(tile.children, [(walks, inner)], k, trips, f"hidden-tile loop {tile.start:#x}")
    else:  # one tile a program, which is no loop (kernels/common.py, own_tiles): its loops are the step's
        _inner_trips(others, layout, k, trips, "the step")
    return trips


def _inner_trips(loops, layout, k, trips, where):
    """Trips of `loops`, the inner loops of the hidden tiles `layout` [(walks, inner kinds)] in
    address order: "S" (the sum of shares) is one or two loops, every other kind one."""
    singles = sum(len(inner.replace("S", "")) for _, inner in layout)
    shares = len(loops) - singles
    if not (1 <= shares <= 2 if any("S" in inner for _, inner in layout) else shares == 0):
        raise Unmatched(f"{where} holds {len(loops)} loops; LAYOUT expects "
                        f"{'+'.join(inner for _, inner in layout)!r} (S one or two loops, the others one each)")
    children = iter(loops)
    for walks, inner in layout:
        for kind in inner:
            if kind == "S":
                trips.update(_share_trips([next(children) for _ in range(shares)], k))
            else:  # W_hh over R; W_hr over the extent the tile does not walk
                loop = next(children)
                K = k.H if kind == "P" and walks == "R" else k.R
                tile_gates = k.G + (k.G == 3)  # a fused tile is a power of two wide (kernels/common.py)
                trips[loop.start] = _stream_trips(loop, k, K, tile_gates if kind == "W" else 1)


def per_step(step, k):
    """Counter of instruction class -> warp-instructions one step issues per warp (sass.CLASSES,
    "total"): the step loop's own instructions once per sub-step, nested loops by trip_counts."""
    trips = trip_counts(step, k)
    counts = sass.per_iteration(step, lambda loop, depth: trips[loop.start])
    own = sass.per_iteration(dataclasses.replace(step, children=[]), None)
    for name, v in own.items():
        counts[name] += (k.substeps - 1) * v
    return counts


# ---- the model -----------------------------------------------------------------------------------

def issue_us(instr, warps, per_sm=1):
    """Issue bound of `instr` warp-instructions per warp on `warps` warps, `per_sm` programs to an SM."""
    return max(instr * warps / 4, instr) * per_sm / (CLOCK_GHZ * 1e3)


def model_us(issue, barriers, launches, l2_trips):
    return issue + barriers * BARRIER_US + launches * LAUNCH_US + l2_trips * L2_TRIP_US


def step_bytes(k, batch_tiles, B, itemsize, save):
    """(weights streamed from L2, state exchanged between programs, outputs written) per step over the
    whole grid, in bytes. Weights: each batch tile's programs read their W_hh slices (padded to
    programs x BLOCK_H units; all of W_hh with rows) unless resident, and W_hr, never resident.
    State: the forward's h (and m, with a projection) is written once and read by every program; the
    backward's fp32 shares of dh_{t-1}, one [B, R] per program, are written and read once (and its
    total dh_t, with a projection, written once and read by every program). Outputs: the step's
    slices of out (plus, saved for backward, the activations and c, and m) or of dG (and dh_t).
    Inputs read (xg, the saved activations) are not counted."""
    P, Bp, G, H, R = k.programs, batch_tiles * k.BLOCK_B, k.G, k.H, k.R
    units = H if k.strategy == "rows" else P * k.BLOCK_H
    weights = 0 if k.resident else batch_tiles * G * units * R * itemsize
    weights += batch_tiles * H * R * itemsize if k.proj else 0
    if k.pass_ == "fwd":
        state = (1 + P) * Bp * (R * itemsize + (H * 4 if k.proj else 0))
        out = B * (R * itemsize + ((G + 1) * H * 4 if save and G > 1 else 0) + (H * 4 if k.proj else 0))
    else:
        state = 2 * P * Bp * R * 4 + ((1 + P) * Bp * R * 4 if k.proj else 0)
        out = B * (G * H * 4 + (R * 4 if k.proj else 0))
    return weights, state, out


# ---- compiling and the table ---------------------------------------------------------------------

def _compile(job):
    """In a fresh process: the resources of `job` (inspection.compile_job) and its SASS text."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    res = ins.compile_job(job)
    _, name, arch, signature, constexprs, attrs, options = job
    kernel = getattr(ins.jit_kernels().recurrence, name)
    src = ASTSource(kernel, dict(signature), dict(constexprs), {p: [list(a) for a in v] for p, v in attrs})
    with warnings.catch_warnings(), ins._no_interpreter():
        warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(options))  # cached
    return dict(res, sass=sass.disassemble(compiled.asm["cubin"]))


def _safe(job):
    try:
        return _compile(job)
    except Exception as exc:  # one broken kernel must not hide the other rows
        return dict(error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _compile_all(jobs, processes):
    """{job: _safe(job)} in fresh processes (inspection.run_jobs' pool: the interpreter off)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    jobs = list(dict.fromkeys(jobs))
    with ins._no_interpreter(), ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(zip(jobs, pool.map(_safe, jobs)))


def _case(shape, pass_name, strategy=None):
    pass_, train = PASSES[pass_name]
    return ins.Case(shape.cell, pass_, shape.dtype, shape.B, shape.H, train, False, False, False, False,
                    strategy or shape.strategy)


def _tiling(case, job, k):
    """The Tiling of a compiled `job` of `case`; sub-steps per step from the launch's sub-step count
    (the last argument of a rows or split launch: T x sub-steps, plus one for the backward)."""
    c = ins.constexprs(job)
    stepwise = case.strategy == "stepwise"  # the split kernel (c["STRATEGY"]), launched a sub-step at a time
    args = ins.launch(case._replace(strategy="split") if stepwise else case, k)[2]
    R = case.H // 2 if c["PROJ"] else case.H
    programs = 1 if c["STRATEGY"] == "rows" else -(-case.H // c["BLOCK_H"])
    strategy = "stepwise" if stepwise else c["STRATEGY"]
    return Tiling(case.pass_, bool(c["PROJ"]), strategy, c["GATES"], case.H, R, c["BLOCK_B"], c["BLOCK_H"],
                  c["BLOCK_K"], dict(job[6])["num_warps"], bool(c["W_RESIDENT"]), bool(c["DOT_FP32"]),
                  programs, args[-1] // ins.T)


def table(shapes, passes=tuple(PASSES), processes=2):
    """One dict per shape (Shape) and pass (keys of PASSES): the estimate's row. Compiles in
    `processes` fresh processes (Triton caches: a rerun takes seconds)."""
    k = ins.jit_kernels()
    cases = {(s, p): _case(s, p) for s in shapes for p in passes}
    jobs = {key: ins.specialize(case, ARCH, k) for key, case in cases.items()}
    results = _compile_all(jobs.values(), processes)
    rows = {key: _row(cases[key], job, results[job], k) for key, job in jobs.items()}
    # a split grid the heuristic chose but that cannot be co-resident runs as stepwise (kernels/recurrence.py run)
    fallback = {key: _case(key[0], key[1], "stepwise") for key, row in rows.items()
                if row["strategy"] == "split" and key[0].strategy == "auto" and row["co_resident"] is False}
    if fallback:
        again = {key: ins.specialize(case, ARCH, k) for key, case in fallback.items()}
        results = _compile_all(again.values(), processes)
        rows.update({key: dict(_row(case, again[key], results[again[key]], k), strategy="stepwise (fallback)")
                     for key, case in fallback.items()})
    return [dict(shape=s.name, spec=s.spec, **{"pass": p}, **rows[(s, p)])
            for (s, p) in cases]


def _row(case, job, res, k):
    t = _tiling(case, job, k)
    batch_tiles = -(-case.B // t.BLOCK_B)
    programs = t.programs * batch_tiles
    row = dict(strategy=t.strategy, config=ins.describe(job), programs=programs, warps=t.warps,
               regs=res.get("regs"), shared=res.get("shared"), per_sm=None, co_resident=None)
    if "error" in res:
        return dict(row, na=f"compile failed: {res['error']}")
    row["per_sm"] = programs_per_sm(res["regs"], res["shared"], t.warps, H100)
    row["co_resident"] = row["per_sm"] * SMS >= programs
    weights, state, out = step_bytes(t, batch_tiles, case.B, ins.DTYPES[case.dtype].itemsize, ins.saves(case))
    moved = weights + state + out
    sharing = -(-programs // SMS)  # programs one SM runs, at once or one after another
    row.update(bytes=moved, weight_bytes=weights, state_bytes=state, out_bytes=out,
               bw_us=moved / programs * sharing / L2_BYTES_PER_CYCLE / (CLOCK_GHZ * 1e3),
               barriers=t.substeps if t.strategy == "split" else 0,
               launches=t.substeps if t.strategy == "stepwise" else 0, l2_trips=t.substeps)
    try:
        counts = per_step(step_loop(sass.parse(res["sass"])), t)
    except Unmatched as exc:
        return dict(row, na=str(exc))
    row.update(instr_per_warp=counts["total"], classes={n: counts[n] for n in sass.CLASSES if counts[n]},
               issue_us=issue_us(counts["total"], t.warps, sharing))
    row["model_us"] = model_us(row["issue_us"], row["barriers"], row["launches"], row["l2_trips"])
    return row


HEADER = (f"Per-step estimate on sm_90 (H100 SXM: {SMS} SMs, {CLOCK_GHZ} GHz): a static bound and a model, "
          f"not a timing.\nmodel = issue bound + grid barriers x {BARRIER_US} us + launches x {LAUNCH_US} us + "
          f"dependent L2 trips x {L2_TRIP_US:.2f} us; bw = bytes per SM at {L2_BYTES_PER_CYCLE} B/cycle "
          "(not in the model). fastrnn/estimate.py says where each number comes from.")
COLUMNS = (("shape", "shape"), ("pass", "pass"), ("strategy", "strategy"), ("config", "config"),
           ("programs", "programs"), ("co_resident", "co-res"), ("instr_per_warp", "instr/warp"),
           ("issue_us", "issue us"), ("bytes", "KB/step"), ("bw_us", "bw us"), ("barriers", "barriers"),
           ("l2_trips", "L2 trips"), ("model_us", "model us"))


def _cell(key, value):
    if value is None:
        return "n/a"
    if key == "co_resident":
        return "yes" if value else "NO"
    if key == "bytes":
        return f"{value / 1024:.0f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def print_table(rows):
    print(HEADER)
    lines = [[title for _, title in COLUMNS]] + [[_cell(key, r.get(key)) for key, _ in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())
    for r in rows:
        if r.get("na"):
            print(f"n/a {r['shape']} {r['pass']}: {r['na']}")


def add_arguments(parser):
    """--shape; main also reads --json and --jobs, which `python -m fastrnn inspect` already has."""
    parser.add_argument("--shape", action="append", default=[], type=parse_shape, dest="shapes",
                        metavar="CELL:B=n:H=n:DTYPE[:P=n][:S=strategy]",
                        help=f"estimate this shape too (repeatable), e.g. lstm:B=16:H=768:bf16:P=384; "
                             f"always: {', '.join(f'{k} {v}' for k, v in SHAPES.items())}")


def main(args):
    path = getattr(args, "json", None)
    why = path and _unwritable(path)
    if why:
        raise SystemExit(f"--json {path}: {why}")
    shapes = [parse_shape(spec, name) for name, spec in SHAPES.items()] + list(getattr(args, "shapes", []))
    rows = table(shapes, processes=getattr(args, "jobs", 2))
    print_table(rows)
    if path:
        constants = dict(clock_ghz=CLOCK_GHZ, sms=SMS, barrier_us=BARRIER_US, l2_trip_us=L2_TRIP_US,
                         launch_us=LAUNCH_US, l2_bytes_per_cycle=L2_BYTES_PER_CYCLE)
        with open(path, "w") as f:
            json.dump(dict(note="a static bound and a model, not a timing", constants=constants, rows=rows), f,
                      indent=1)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m fastrnn.estimate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", metavar="PATH", help="also save the rows as JSON")
    parser.add_argument("--jobs", type=int, default=2, help="compile processes (default 2)")
    raise SystemExit(main(parser.parse_args()))
