"""Launch configurations: one documented heuristic, overridable (tests force tiny tiles).

Why these numbers:
- BLOCK_B >= 16 and BLOCK_H, BLOCK_K >= 16: tl.dot's minimum tile on NVIDIA GPUs.
- One program per BLOCK_B batch rows owns the whole hidden state of those rows for all T steps, so
  programs never wait for each other. BLOCK_B = 16 for B <= 16, else 32.
- BLOCK_H = 32 (the LSTM keeps four [BLOCK_B, BLOCK_H] fp32 accumulators live), BLOCK_K = 32.
- W_RESIDENT: when all of W_hh is a single [BLOCK_K, G * BLOCK_H] tile of at most 32 KiB (e.g. LSTM
  H = R = 64 in bf16, Elman H = 128 in bf16 or 64 in fp32), load it once before the time loop and
  keep it in registers; otherwise stream it from L2 each step.
- DOT_FP32: fp32 weights multiply in IEEE fp32 (matching cuDNN with TF32 off) unless
  torch.backends.cuda.matmul.allow_tf32 is set; fp16/bf16 weights use tensor cores, except under
  the interpreter, which multiplies the same (exact) products in fp32.
`python -m fastrnn inspect` compiles what this returns over a grid of shapes and checks resources.
"""
import torch
import triton

GATES = {"lstm": 4, "elman": 1}
RESIDENT_BYTES = 32 * 1024
KEYS = ("BLOCK_B", "BLOCK_H", "BLOCK_K", "W_RESIDENT", "num_warps", "DOT_FP32", "PRECISION")


def launch_config(cell, pass_, B, H, R, dtype, device, override=None):
    """Launch parameters for `cell` ('lstm' | 'elman'), `pass_` ('fwd' | 'bwd'), batch B,
    hidden H, recurrent width R, weight `dtype` on `device`. `override` replaces any key."""
    interpret = torch.device(device).type == "cpu"
    block_h = 32 if cell == "lstm" else 64
    cfg = {
        "BLOCK_B": 16 if B <= 16 else 32,
        "BLOCK_H": min(block_h, max(16, triton.next_power_of_2(H))),
        "BLOCK_K": min(64, max(16, triton.next_power_of_2(R))) if pass_ == "fwd" else 32,
        "num_warps": 4,
        "DOT_FP32": interpret or dtype == torch.float32,
        "PRECISION": "ieee",
    }
    if not interpret and dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        cfg.update(DOT_FP32=False, PRECISION="tf32")
    if pass_ == "fwd":
        bh, bk = triton.next_power_of_2(H), triton.next_power_of_2(R)
        fits = GATES[cell] * max(bh, 16) * max(bk, 16) * dtype.itemsize <= RESIDENT_BYTES
        if fits:
            cfg.update(BLOCK_H=max(16, bh), BLOCK_K=max(16, bk))
        cfg["W_RESIDENT"] = fits
    else:
        cfg["W_RESIDENT"] = False
    if override:
        unknown = set(override) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown launch config keys {sorted(unknown)}; known: {KEYS}")
        cfg.update(override)
    if cfg["W_RESIDENT"] and (H > cfg["BLOCK_H"] or R > cfg["BLOCK_K"]):
        raise ValueError(f"W_RESIDENT needs H <= BLOCK_H and R <= BLOCK_K, got H={H}, R={R}, {cfg}")
    return cfg
