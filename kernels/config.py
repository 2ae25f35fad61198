"""Launch configurations: one documented heuristic, overridable (tests force tiny tiles).

Why these numbers (each checked by `python -m fastrnn inspect`: no spills on sm_80 / sm_90):
- BLOCK_B, BLOCK_H, BLOCK_K >= 16: tl.dot's minimum tile on NVIDIA GPUs.
- One program per BLOCK_B batch rows owns the whole hidden state of those rows for all T steps, so
  programs never wait for each other. BLOCK_B = 16 for B <= 16, else 32.
- BLOCK_H = 32 for the LSTM (four [BLOCK_B, BLOCK_H] fp32 accumulators live), 64 for Elman.
- BLOCK_K = 16 and 4 warps by default; TUNED below replaces them where ptxas (Triton 3.9's) would
  otherwise keep a hoisted address or two on the stack (8-16 bytes, at 64-128 registers: not for
  want of registers). `python -m fastrnn sweep` derives the table: per kind of kernel, the first
  setting in fastrnn/sweep.py's CANDIDATES that compiles without a spill on sm_80 and sm_90 for
  every flag setting (direction, lengths, relu, TF32). Rerun it when Triton changes.
- W_RESIDENT: when all of W_hh is a single [BLOCK_K, G * BLOCK_H] tile of at most 16 KiB in
  fp16/bf16 (LSTM H = 32, Elman H = 64) or 4 KiB in fp32 (whose FMA dot needs more registers per
  element), load it once before the time loop and keep it in registers; else stream it each step.
  Not with a projection (the extra W_hr loop on top of resident tiles spills), nor for the LSTM
  with BLOCK_B = 32 (fp16 spills there).
- DOT_FP32: fp32 weights multiply in IEEE fp32 (matching cuDNN with TF32 off) unless
  torch.backends.cuda.matmul.allow_tf32 is set; fp16/bf16 weights use tensor cores, except under
  the interpreter, which multiplies the same (exact) products in fp32.
`python -m fastrnn inspect` compiles what this returns over a grid of shapes and checks resources.
"""
import torch
import triton

GATES = {"lstm": 4, "elman": 1}
BLOCK_H = {"lstm": 32, "elman": 64}  # the widest H tile (see the docstring)
RESIDENT_BYTES = 16 * 1024  # for fp16/bf16 weights; a quarter of it for fp32 (see W_RESIDENT)
# (cell, pass, projection, weight kind, BLOCK_B, saves for backward) -> replaced launch keys, for
# streamed weights: the table `python -m fastrnn sweep` prints (see the module docstring).
TUNED = {
    ("lstm", "fwd", False, "fp32", 16, False): dict(num_warps=8, BLOCK_K=16),
    ("lstm", "fwd", False, "16-bit", 32, False): dict(num_warps=8, BLOCK_K=16),
    ("lstm", "fwd", False, "16-bit", 16, True): dict(num_warps=4, BLOCK_K=32),
    ("lstm", "bwd", False, "fp32", 32, False): dict(num_warps=8, BLOCK_K=16),
    ("lstm", "bwd", False, "16-bit", 32, False): dict(num_warps=8, BLOCK_K=16),
    ("lstm", "fwd", True, "fp32", 16, False): dict(num_warps=2, BLOCK_K=16, BLOCK_H=16),
    ("lstm", "fwd", True, "16-bit", 16, True): dict(num_warps=8, BLOCK_K=16),
    ("lstm", "bwd", True, "fp32", 16, False): dict(num_warps=2, BLOCK_K=16, BLOCK_H=16),
}
KEYS = ("BLOCK_B", "BLOCK_H", "BLOCK_K", "W_RESIDENT", "num_warps", "DOT_FP32", "PRECISION")


def launch_config(cell, pass_, B, H, R, dtype, device, override=None, save=False):
    """Launch parameters for `cell` ('lstm' | 'elman'), `pass_` ('fwd' | 'bwd'), batch B,
    hidden H, recurrent width R, weight `dtype` on `device`; `save`: an LSTM forward that stores
    activations for backward. `override` replaces any key."""
    interpret = torch.device(device).type == "cpu"
    block_h = BLOCK_H[cell]
    cfg = {
        "BLOCK_B": 16 if B <= 16 else 32,
        "BLOCK_H": min(block_h, max(16, triton.next_power_of_2(H))),
        "BLOCK_K": 16,
        "num_warps": 4,
        "DOT_FP32": interpret or dtype == torch.float32,
        "PRECISION": "ieee",
    }
    if not interpret and dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        cfg.update(DOT_FP32=False, PRECISION="tf32")
    proj = R != H  # proj_size < hidden_size, so R == H exactly when the LSTM does not project
    resident = False
    if pass_ == "fwd" and not proj:
        bh = max(16, triton.next_power_of_2(H))
        budget = RESIDENT_BYTES if dtype.itemsize == 2 else RESIDENT_BYTES // 4
        resident = GATES[cell] * bh * bh * dtype.itemsize <= budget
        # four resident gate tiles next to [32, BLOCK_H] accumulators spill in fp16 (see inspect)
        resident = resident and (cell == "elman" or cfg["BLOCK_B"] == 16)
        if resident:
            cfg.update(BLOCK_H=bh, BLOCK_K=bh)
    cfg["W_RESIDENT"] = resident
    if not resident:
        kind = "fp32" if dtype == torch.float32 else "16-bit"
        cfg.update(TUNED.get((cell, pass_, proj, kind, cfg["BLOCK_B"], save), {}))
    if override:
        unknown = set(override) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown launch config keys {sorted(unknown)}; known: {KEYS}")
        cfg.update(override)
    if cfg["W_RESIDENT"] and (H > cfg["BLOCK_H"] or R > cfg["BLOCK_K"]):
        raise ValueError(f"W_RESIDENT needs H <= BLOCK_H and R <= BLOCK_K, got H={H}, R={R}, {cfg}")
    return cfg


def kernel_kwargs(cfg, pass_):
    """The launch keywords a kernel takes from `cfg`: tiles, dot flags, num_warps, and (forward
    kernels only) W_RESIDENT."""
    keys = [k for k in KEYS if k != "W_RESIDENT" or pass_ == "fwd"]
    return {k: cfg[k] for k in keys}
