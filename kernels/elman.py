"""Fused Elman recurrence (tanh or relu): one launch per layer walks every step of each direction.

Shapes: T steps, B batch, H hidden, D directions. The input projection xg = x W_ih^T + b_ih + b_hh
([T, B, H] per direction) is one GEMM before the launch; dW_hh is one GEMM per direction after the
backward launch (fastrnn/fused.py). Programs, directions, tiles, state buffers and barriers work as
in kernels/lstm.py (read its docstring).
"""
import torch
import triton
import triton.language as tl

from .common import active_rows, direction, dot, load_w, matmul, step_time, tanh
from .config import kernel_kwargs, launch_config


@triton.jit
def elman_fwd_kernel(
    xg_ptr, xg_rev_ptr, stride_xt, stride_xb,  # [T, B, H] input projection per direction (biases in)
    w_hh_ptr, w_hh_rev_ptr,         # [H, H] per direction
    len_ptr,                        # [B] lengths (HAS_LENGTHS)
    h_ptr,                          # [D, 2, B, H] fp32 state; slot 0 holds h0 on entry
    out_ptr, stride_ot, stride_ob,  # [T, B, D*H] output h_t, zero past a sequence's end
    T, B, H,
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, RELU: tl.constexpr,
    W_RESIDENT: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    d, rev = direction(REVERSE)
    if d == 1:
        xg_ptr = xg_rev_ptr
        w_hh_ptr = w_hh_rev_ptr
    h_ptr += d * 2 * B * H
    out_ptr += d * H
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    if W_RESIDENT:  # H <= BLOCK_H, BLOCK_K: all of W_hh^T as one [BLOCK_K, BLOCK_H] tile
        offs_n = tl.arange(0, BLOCK_H)
        offs_k = tl.arange(0, BLOCK_K)
        w = load_w(w_hh_ptr, offs_n, offs_n < H, offs_k, offs_k < H, H, 1)
    for s in range(T):
        t = step_time(s, T, rev)
        active = active_rows(len_ptr, offs_b, mask_b, t, T, HAS_LENGTHS)[:, None]  # [BLOCK_B, 1]
        h_read = h_ptr + (s % 2) * B * H
        h_write = h_ptr + ((s + 1) % 2) * B * H
        for h0 in range(0, H, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            mask_h = offs_h < H
            mask = mask_b[:, None] & mask_h[None, :]
            acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
            if W_RESIDENT:
                offs_k = tl.arange(0, BLOCK_K)
                h_prev = tl.load(h_read + offs_b[:, None] * H + offs_k[None, :],
                                 mask=mask_b[:, None] & (offs_k[None, :] < H), other=0.0)  # [BLOCK_B, BLOCK_K]
                acc = dot(h_prev, w, acc, DOT_FP32, PRECISION)
            else:
                acc = matmul(acc, h_read, H, offs_b, mask_b, w_hh_ptr, H, 1, offs_h, mask_h, H,
                             BLOCK_K, DOT_FP32, PRECISION)
            xg = xg_ptr + t * stride_xt + offs_b[:, None] * stride_xb + offs_h[None, :]
            pre = acc + tl.load(xg, mask=mask, other=0.0).to(tl.float32)
            if RELU:
                h = tl.where(pre < 0.0, 0.0, pre)  # NaN stays NaN, as in torch.relu (tl.maximum gives 0)
            else:
                h = tanh(pre)
            bh = offs_b[:, None] * H + offs_h[None, :]
            h_prev_tile = tl.load(h_read + bh, mask=mask, other=0.0)
            tl.store(h_write + bh, tl.where(active, h, h_prev_tile), mask=mask)
            out = out_ptr + t * stride_ot + offs_b[:, None] * stride_ob + offs_h[None, :]
            tl.store(out, tl.where(active, h, 0.0).to(out_ptr.dtype.element_ty), mask=mask)
        tl.debug_barrier()  # the whole state of step s is stored before step s + 1 reads it


@triton.jit
def elman_bwd_kernel(
    dout_ptr, stride_dt, stride_db,  # [T, B, D*H] gradient of the output
    out_ptr, stride_ot, stride_ob,   # [T, B, D*H] the forward's output h_t (for the activation's slope)
    w_hh_ptr, w_hh_rev_ptr,          # [H, H] per direction
    len_ptr,                         # [B] lengths (HAS_LENGTHS)
    dh_ptr,                          # [D, 2, B, H] fp32 state; slot 0 holds dh_n on entry
    dg_ptr,                          # [D, T, B, H] fp32 out: gradient of the pre-activation
    T, B, H,
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, RELU: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    d, rev = direction(REVERSE)
    if d == 1:
        w_hh_ptr = w_hh_rev_ptr
    dout_ptr += d * H
    out_ptr += d * H
    dh_ptr += d * 2 * B * H
    dg_ptr += d * T * B * H
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    for s in range(T):
        t = step_time(s, T, rev == 0)  # the forward's steps, last to first
        active = active_rows(len_ptr, offs_b, mask_b, t, T, HAS_LENGTHS)[:, None]
        dh_read = dh_ptr + (s % 2) * B * H
        dh_write = dh_ptr + ((s + 1) % 2) * B * H
        dg_t = dg_ptr + t * B * H
        for h0 in range(0, H, BLOCK_H):  # dG_t = (dh_{t+1 -> t} + dout_t) * act'(pre_t)
            offs_h = h0 + tl.arange(0, BLOCK_H)
            mask = mask_b[:, None] & (offs_h[None, :] < H)
            bh = offs_b[:, None] * H + offs_h[None, :]
            d_out = tl.load(dout_ptr + t * stride_dt + offs_b[:, None] * stride_db + offs_h[None, :],
                            mask=mask, other=0.0).to(tl.float32)
            h = tl.load(out_ptr + t * stride_ot + offs_b[:, None] * stride_ob + offs_h[None, :],
                        mask=mask, other=0.0).to(tl.float32)
            dh = tl.load(dh_read + bh, mask=mask, other=0.0) + d_out
            if RELU:
                dpre = tl.where(h > 0, dh, 0.0)
            else:
                dpre = dh * (1.0 - h * h)
            tl.store(dg_t + bh, tl.where(active, dpre, 0.0), mask=mask)
        tl.debug_barrier()
        for h0 in range(0, H, BLOCK_H):  # dh_{t-1} = dG_t W_hh; unchanged past a sequence's end
            offs_h = h0 + tl.arange(0, BLOCK_H)
            mask_h = offs_h < H
            mask = mask_b[:, None] & mask_h[None, :]
            bh = offs_b[:, None] * H + offs_h[None, :]
            dh_prev = matmul(tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32), dg_t, H, offs_b, mask_b,
                             w_hh_ptr, 1, H, offs_h, mask_h, H, BLOCK_K, DOT_FP32, PRECISION)
            dh_in = tl.load(dh_read + bh, mask=mask, other=0.0)
            tl.store(dh_write + bh, tl.where(active, dh_prev, dh_in), mask=mask)
        tl.debug_barrier()


def elman_fwd(xg, w_hh, h0, lengths, out, *, reverse, relu, config=None):
    """Run the recurrence of D = len(xg) directions in one launch (grid axis 1: forward, then
    reverse). xg: D tensors [T, B, H] with unit last stride and equal strides, w_hh: D tensors
    [H, H], h0: [D, B, H], lengths: [B] int32 or None, out: [T, B, D*H] (unit last stride);
    `reverse` makes a one-direction launch walk backwards. Writes out; returns h_n [D, B, H] fp32."""
    D = len(xg)
    T, B, H = xg[0].shape
    assert xg[0].stride() == xg[-1].stride() and xg[0].stride(-1) == 1
    cfg = launch_config("elman", "fwd", B, H, H, w_hh[0].dtype, xg[0].device, override=config)
    h = torch.empty((D, 2, B, H), device=xg[0].device, dtype=torch.float32)
    h[:, 0] = h0
    elman_fwd_kernel[(triton.cdiv(B, cfg["BLOCK_B"]), D)](
        xg[0], xg[-1], xg[0].stride(0), xg[0].stride(1), w_hh[0], w_hh[-1], lengths, h,
        out, out.stride(0), out.stride(1), T, B, H,
        REVERSE=reverse, HAS_LENGTHS=lengths is not None, RELU=relu,
        **kernel_kwargs(cfg, "fwd"),
    )
    return h[:, T % 2]


def elman_bwd(dout, dh_n, out, w_hh, lengths, *, reverse, relu, config=None):
    """Backward of elman_fwd. dout, out: [T, B, D*H] (unit last stride), dh_n: [D, B, H],
    w_hh: D tensors [H, H]. Returns (dG [D, T, B, H], dh0 [D, B, H]) in fp32; dG[d] is the
    gradient of xg[d]."""
    D, B, H = dh_n.shape
    T = out.shape[0]
    cfg = launch_config("elman", "bwd", B, H, H, w_hh[0].dtype, out.device, override=config)
    dh = torch.empty((D, 2, B, H), device=out.device, dtype=torch.float32)
    dh[:, 0] = dh_n
    dg = torch.empty((D, T, B, H), device=out.device, dtype=torch.float32)
    elman_bwd_kernel[(triton.cdiv(B, cfg["BLOCK_B"]), D)](
        dout, dout.stride(0), dout.stride(1), out, out.stride(0), out.stride(1), w_hh[0], w_hh[-1],
        lengths, dh, dg, T, B, H,
        REVERSE=reverse, HAS_LENGTHS=lengths is not None, RELU=relu,
        **kernel_kwargs(cfg, "bwd"),
    )
    return dg, dh[:, T % 2]
