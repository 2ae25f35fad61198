"""Launch configurations: one documented heuristic, overridable (tests force tiny tiles).

STRATEGY (kernels/recurrence.py describes each): `config={"STRATEGY": ...}` first, else the
environment variable FASTRNN_TRITON_STRATEGY (read at every call), else the heuristic: "split" for
H >= SPLIT_MIN_H, where the rows grid would leave most of a GPU idle, "rows" below, where one
program holds all of W_hh and the batch fills the grid. Under Triton's interpreter (CPU tensors) a
grid barrier cannot work, so the heuristic's "split" becomes its twin "stepwise", and asking for
"split" by name raises. On a GPU, a split grid that the compiled kernel's registers and shared
memory cannot keep co-resident falls back to "stepwise" when the heuristic chose it and raises when
it was asked for (kernels/recurrence.py, `run`).

Why these numbers (each checked by `python -m fastrnn inspect`: no spills on sm_80 / sm_90):
- BLOCK_B, BLOCK_H, BLOCK_K >= 16: tl.dot's minimum tile on NVIDIA GPUs; BLOCK_B = 1 (split at
  B = 1) multiplies on the CUDA cores instead (kernels/common.py `dot`), and BLOCK_H may then be
  smaller than 16.
- rows: one program per BLOCK_B batch rows (16 for B <= 16, else 32) owns all of their hidden state
  for all T steps. BLOCK_H = 32 for the LSTM (four [BLOCK_B, BLOCK_H] fp32 accumulators live), 64
  for Elman. BLOCK_K = 16 and 4 warps by default; TUNED below replaces them where ptxas (Triton
  3.9's) would otherwise keep a hoisted address or two on the stack. `python -m fastrnn sweep`
  derives the table: per kind of kernel, the first setting in fastrnn/sweep.py's CANDIDATES that
  compiles without a spill on sm_80 and sm_90 for every flag setting. Rerun it when Triton changes.
  W_RESIDENT when all of W_hh is a single [BLOCK_K, G * BLOCK_H] tile of at most 16 KiB in
  fp16/bf16 (LSTM H = 32, Elman H = 64) or 4 KiB in fp32 (whose FMA dot needs more registers per
  element); not with a projection, nor for the LSTM with BLOCK_B = 32 (both spill).
- split / stepwise: BLOCK_B = 16 up to B = 16, 32 up to 32, else 64 (a batch tile's programs each
  stream or hold their W slice: wider tiles mean fewer copies), but 16 for fp32, whose CUDA-core
  products cost issue slots in proportion to the tile, and 1 for B = 1. BLOCK_H is the smallest
  power of two that keeps the grid within one program per SM (SMS, or the device's count), up to 64
  and ACCUMULATORS. A program's W slice (its units' G * BLOCK_H rows of W_hh, the same in forward
  and backward) stays on chip (W_RESIDENT, in PIECES tiles of BLOCK_K = 256 of R; 128 beside a
  64-row tile in the backward and with a projection) when it fits RESIDENT_SPLIT bytes: Triton keeps
  a tensor-core operand in shared memory (A100 allows 163 KiB per block), an FMA operand in
  registers (fp32, and BLOCK_B = 1). Where ptxas would spill otherwise (each rule found by `inspect
  --flags all --strategy all`, in `_split`): an FMA slice beside a 16-row tile keeps half that
  budget in the backward (the share dot's operands live beside it) and when 32 units wide, and runs
  8 warps when 64 or more columns of R wide; a tile of more than 4096 fp32 accumulators (BLOCK_B x G
  x BLOCK_H, at shape c) runs 8 warps, and so does a resident tensor-core slice beside a 64-row tile
  (which keeps one only up to R = 512), in more than 4 pieces, or in a projected LSTM's backward; a
  streamed FMA slice comes without Triton's prefetch (num_stages = 1: its buffers spill), in BLOCK_K
  = 16 tiles when wider than 64 columns. Every split launch states ptxas a budget of 255 registers
  (MAXNREG).
- DOT_FP32: fp32 weights multiply in IEEE fp32 (matching cuDNN with TF32 off) unless
  torch.backends.cuda.matmul.allow_tf32 is set; fp16/bf16 weights use tensor cores, except under
  the interpreter, which multiplies the same (exact) products in fp32.
`python -m fastrnn inspect` compiles what this returns over a grid of shapes and checks resources.
"""
import os

import torch
import triton

from .cells import CELLS

BLOCK_H = {"lstm": 32, "gru": 32, "elman": 64}  # the widest H tile of rows (see the docstring)
RESIDENT_BYTES = 16 * 1024  # rows, for fp16/bf16 weights; a quarter of it for fp32 (see W_RESIDENT)
RESIDENT_SPLIT = {"mma": 112 * 1024, "fma": 32 * 1024}  # split: a W slice kept on chip (see above)
SPLIT_MIN_H = 128
# split / stepwise: the register budget stated to ptxas, all 255 a thread can have. Given none, ptxas
# aims lower for occupancy and keeps a few values of the time loop on the stack, even at 40
# registers. A split grid holds about one program per SM, so occupancy is not what it needs; one
# whose registers leave it unable to be co-resident runs as stepwise (kernels/recurrence.py, `run`).
MAXNREG = 255
# split / stepwise: the most fp32 accumulators (BLOCK_B x G x BLOCK_H) a tile may have. A
# [64, 4 x 64] LSTM or GRU tile (B = 256, H = 2048 in fp16/bf16) spills 24-144 B in training on
# both architectures, whatever the warps, K tile or pipelining; [64, 4 x 32] does not. That grid
# (256 programs) outgrows an H100 in training and then runs as stepwise (kernels/recurrence.py, `run`).
ACCUMULATORS = 8192
SMS = 132  # an H100's SMs: the grid size the heuristic aims at when no GPU is there to ask
STRATEGIES = ("rows", "split", "stepwise")
ENV = "FASTRNN_TRITON_STRATEGY"
# (cell, pass, projection, weight kind, BLOCK_B, saves for backward) -> replaced launch keys of rows,
# for streamed weights: the table `python -m fastrnn sweep` prints (see the module docstring).
TUNED = {
    ('elman', 'bwd', False, 'fp32', 32, False): dict(num_warps=4, BLOCK_K=16, BLOCK_H=16),
    ('elman', 'bwd', False, '16-bit', 16, False): dict(num_warps=8, BLOCK_K=16),
    ('lstm', 'fwd', False, 'fp32', 16, False): dict(num_warps=8, BLOCK_K=16),
    ('lstm', 'bwd', False, 'fp32', 16, False): dict(num_warps=8, BLOCK_K=16),
    ('lstm', 'bwd', False, 'fp32', 32, False): dict(num_warps=4, BLOCK_K=16, BLOCK_H=16),
    ('lstm', 'fwd', True, 'fp32', 16, False): dict(num_warps=8, BLOCK_K=16),
    ('lstm', 'fwd', True, 'fp32', 32, False): dict(num_warps=4, BLOCK_K=32),
    ('lstm', 'bwd', True, 'fp32', 16, False): dict(num_warps=8, BLOCK_K=16),
    ('lstm', 'bwd', True, 'fp32', 32, False): dict(num_warps=4, BLOCK_K=16, BLOCK_H=16),
    ('lstm', 'bwd', True, '16-bit', 16, False): dict(num_warps=8, BLOCK_K=16),
    ('gru', 'bwd', False, 'fp32', 16, False): dict(num_warps=8, BLOCK_K=16),
    ('gru', 'bwd', False, 'fp32', 32, False): dict(num_warps=4, BLOCK_K=16, BLOCK_H=16),
    ('gru', 'bwd', False, '16-bit', 16, False): dict(num_warps=8, BLOCK_K=16),
    ('gru', 'fwd', False, 'fp32', 32, True): dict(num_warps=8, BLOCK_K=16),
}
KEYS = ("STRATEGY", "BLOCK_B", "BLOCK_H", "BLOCK_K", "PIECES", "W_RESIDENT", "num_warps", "num_stages",
        "maxnreg", "DOT_FP32", "PRECISION")


def launch_config(cell, pass_, B, H, R, dtype, device, override=None, save=False, directions=1):
    """Launch parameters for `cell` ('lstm' | 'elman'), `pass_` ('fwd' | 'bwd'), batch B,
    hidden H, recurrent width R, weight `dtype` on `device`, `directions` in one launch; `save`: a
    forward that stores activations for backward. `override` replaces any key. The result's
    "FALLBACK" (not a launch key) says whether a split grid that cannot be co-resident may run as
    stepwise instead."""
    interpret = torch.device(device).type == "cpu"
    override = dict(override or {})
    unknown = set(override) - set(KEYS) - {"FALLBACK"}
    if unknown:
        raise ValueError(f"unknown launch config key {sorted(unknown)}; known: {KEYS}")
    strategy = override.get("STRATEGY") or os.environ.get(ENV) or None
    chosen = strategy is None
    if chosen:
        strategy = "split" if H >= SPLIT_MIN_H else "rows"
        if interpret and strategy == "split":
            strategy = "stepwise"
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown triton strategy {strategy!r} (from config= or {ENV}); "
                         f"choose one of {', '.join(STRATEGIES)}")
    if strategy == "split" and interpret:
        raise ValueError("the 'split' strategy needs a GPU: its grid barrier cannot work under Triton's "
                         "interpreter, which runs programs one after another; use 'stepwise', the same "
                         "kernel body with one launch per step")
    cfg = {
        "DOT_FP32": interpret or dtype == torch.float32,
        "PRECISION": "ieee",
        "num_warps": 4,
        "num_stages": 3,  # Triton's default
        "maxnreg": None,  # ptxas's own register budget
    }
    if not interpret and dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        cfg.update(DOT_FP32=False, PRECISION="tf32")
    if strategy == "rows":
        cfg.update(_rows(cell, pass_, B, H, R, dtype, save))
    else:
        cfg.update(_split(cell, pass_, B, H, R, dtype, device, directions, interpret))
    cfg["STRATEGY"] = strategy
    cfg.update(override)
    if cfg["W_RESIDENT"] and (cfg["PIECES"] * cfg["BLOCK_K"] < R or
                              (strategy == "rows" and max(H, R) > cfg["BLOCK_H"])):
        raise ValueError(f"W_RESIDENT needs PIECES * BLOCK_K >= R and, for rows, H and R <= BLOCK_H; "
                         f"got H={H}, R={R}, {cfg}")
    cfg.setdefault("FALLBACK", chosen and strategy == "split")
    return cfg


def _rows(cell, pass_, B, H, R, dtype, save):
    cfg = {
        "BLOCK_B": 16 if B <= 16 else 32,
        "BLOCK_H": min(BLOCK_H[cell], max(16, triton.next_power_of_2(H))),
        "BLOCK_K": 16,
        "PIECES": 1,
    }
    proj = R != H  # proj_size < hidden_size, so R == H exactly when the LSTM does not project
    resident = False
    if pass_ == "fwd" and not proj:
        bh = max(16, triton.next_power_of_2(H))
        budget = RESIDENT_BYTES if dtype.itemsize == 2 else RESIDENT_BYTES // 4
        resident = _tile_gates(cell) * bh * bh * dtype.itemsize <= budget
        # four resident gate tiles next to [32, BLOCK_H] accumulators spill in fp16 (see inspect)
        resident = resident and (cell == "elman" or cfg["BLOCK_B"] == 16)
        if resident:
            cfg.update(BLOCK_H=bh, BLOCK_K=bh)
    cfg["W_RESIDENT"] = resident
    if not resident:
        kind = "fp32" if dtype == torch.float32 else "16-bit"
        cfg.update(TUNED.get((cell, pass_, proj, kind, cfg["BLOCK_B"], save), {}))
    return cfg


def _split(cell, pass_, B, H, R, dtype, device, directions, interpret):
    sms = SMS if interpret or not torch.cuda.is_available() else \
        torch.cuda.get_device_properties(device).multi_processor_count
    fma = B == 1 or dtype == torch.float32  # products on the CUDA cores: cost grows with the tile
    bb = 1 if B == 1 else 16 if (B <= 16 or fma) else 32 if B <= 32 else 64
    tiles = triton.cdiv(B, bb) * directions
    bh = 1 if bb == 1 else 16
    widest = min(64, ACCUMULATORS // (bb * _tile_gates(cell)))
    while bh < widest and tiles * triton.cdiv(H, bh) > sms:
        bh *= 2
    # beside a 64-row tile, pieces 128 wide in the backward and with a projection: the backward's
    # product of a piece, [BLOCK_K, BLOCK_B] fp32, is 16384 accumulators at 256 and spills
    proj = R != H
    bk = min(128 if bb == 64 and (pass_ == "bwd" or proj) else 256, max(16, triton.next_power_of_2(R)))
    pieces = triton.cdiv(R, bk)
    wide_fma = fma and bb > 1  # FMA products of a 16-row tile (not B = 1's row sums)
    halve = wide_fma and (pass_ == "bwd" or bh >= 32)
    budget = RESIDENT_SPLIT["fma" if fma else "mma"] // (2 if halve else 1)
    resident = (_tile_gates(cell) * pieces * bk * bh * dtype.itemsize <= budget
                and (bb < 64 or R <= 512))
    # 8 warps where ptxas would otherwise spill (`python -m fastrnn inspect --flags all --strategy
    # all`): an FMA slice of 64 or more columns of R held in registers beside a 16-row tile;
    # accumulators of more than 32 fp32 values a thread at 4 warps (the [64, 4 x 32] tile of shape
    # (c)); and a resident tensor-core slice beside a 64-row tile, in more than 4 pieces, or in a
    # projected LSTM's backward
    warps = 8 if ((resident and wide_fma and bk >= 64) or bb * _tile_gates(cell) * bh > 32 * 128
                  or (resident and not fma and (bb == 64 or pieces > 4 or (proj and pass_ == "bwd")))) else 4
    if resident:
        # No software pipelining (num_stages=1): the state a step reads exists only after the
        # barrier, so prefetching it buys nothing, and its buffers (one per piece) would overflow
        # shared memory.
        return dict(BLOCK_B=bb, BLOCK_H=bh, BLOCK_K=bk, PIECES=pieces, W_RESIDENT=True, num_stages=1,
                    num_warps=warps, maxnreg=MAXNREG)
    # Streamed: Triton's pipelining prefetches the weight tiles into shared memory, except for an
    # FMA dot, whose operands go through registers: there prefetch buffers spill, and so do 32-row
    # tiles wider than 64 columns.
    narrow = not fma or _tile_gates(cell) * bh <= 64
    return dict(BLOCK_B=bb, BLOCK_H=bh, BLOCK_K=32 if narrow else 16, PIECES=1, W_RESIDENT=False,
                num_stages=1 if fma else 3, num_warps=warps, maxnreg=MAXNREG)


def _tile_gates(cell):
    """Gate columns of a fused weight tile: a power of two (kernels/common.py, load_gates_w)."""
    return triton.next_power_of_2(CELLS[cell].gates)


def kernel_kwargs(cfg):
    """The launch keywords the kernels take from `cfg`: strategy, tiles, dot flags, num_warps."""
    return {k: cfg[k] for k in KEYS}


def programs_per_sm(regs, shared, num_warps, props):
    """How many programs of a compiled kernel (registers per thread, shared memory bytes) one SM
    holds at once, by the limits in `props` (torch.cuda.get_device_properties)."""
    warp_regs = triton.cdiv(regs * 32, 256) * 256  # registers are allocated per warp, 256 at a time
    limits = [props.max_threads_per_multi_processor // (32 * num_warps),
              props.regs_per_multiprocessor // (warp_regs * num_warps)]
    # the driver reserves 1 KiB of shared memory per program (sm_80 and later)
    limits.append(props.shared_memory_per_multiprocessor // (shared + 1024))
    return min(limits)
