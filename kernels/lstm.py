"""Fused LSTM recurrence: one launch per layer walks every time step of each direction.

Shapes: T steps, B batch, H hidden, R = P (projection) or H. Gate columns are ordered i|f|g|o.
The input projection xg = x W_ih^T + b_ih + b_hh ([T, B, 4H] per direction) is one GEMM done before
the launch; the weight gradients are GEMMs done after the backward launch (see fastrnn/fused.py).

Each program owns BLOCK_B rows of the batch of one direction for all time steps, so no program
ever waits for another (the interpreter runs programs one after another). Grid axis 1 is the
direction: a bidirectional layer is one launch whose two halves run side by side, each with its
own input projection and weights (two pointers, picked by the program), its own slice of the
state buffers, and its own half of the output's columns, so no concatenation follows. Within a
step a program tiles H by BLOCK_H and streams the recurrent weights in BLOCK_K-wide tiles, or,
when W_RESIDENT (the whole W_hh is one tile), loads them once before the time loop and keeps them
in registers. The recurrent state lives in small fp32 ping-pong buffers ([D, 2, B, R] for h,
[D, 2, B, H] for c) that stay in L1/L2: step s reads slot s % 2 and writes slot (s + 1) % 2, and
a barrier separates the steps, so every tile of step s sees the complete state of step s - 1.
"""
import torch
import triton
import triton.language as tl

from .common import active_rows, direction, dot, load_w, matmul, sigmoid, step_time, tanh
from .config import kernel_kwargs, launch_config


@triton.jit
def lstm_fwd_kernel(
    xg_ptr, xg_rev_ptr, stride_xt, stride_xb,  # [T, B, 4H] input projection per direction (biases in)
    w_hh_ptr, w_hh_rev_ptr,         # [4H, R] per direction
    w_hr_ptr, w_hr_rev_ptr,         # [R, H] per direction (PROJ)
    len_ptr,                        # [B] lengths (HAS_LENGTHS)
    h_ptr, c_ptr,                   # [D, 2, B, R], [D, 2, B, H] fp32 state; slot 0 holds h0, c0 on entry
    out_ptr, stride_ot, stride_ob,  # [T, B, D*R] output h_t, zero past a sequence's end
    m_ptr, stride_md, stride_mt,    # [D, T, B, H] fp32 o*tanh(c_t) (PROJ; stride_mt = 0: one scratch slot)
    gates_ptr, cs_ptr,              # [D, T, B, 4H] activated gates, [D, T, B, H] c_t, fp32 (SAVE)
    T, B, H, R,
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, PROJ: tl.constexpr, SAVE: tl.constexpr,
    W_RESIDENT: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    d, rev = direction(REVERSE)
    if d == 1:
        xg_ptr = xg_rev_ptr
        w_hh_ptr = w_hh_rev_ptr
    if PROJ:
        if d == 1:
            w_hr_ptr = w_hr_rev_ptr
        m_ptr += d * stride_md
    if SAVE:
        gates_ptr += d * T * B * 4 * H
        cs_ptr += d * T * B * H
    h_ptr += d * 2 * B * R
    c_ptr += d * 2 * B * H
    out_ptr += d * R
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    if W_RESIDENT:  # H <= BLOCK_H and R <= BLOCK_K: all of W_hh^T as four [BLOCK_K, BLOCK_H] tiles
        offs_h = tl.arange(0, BLOCK_H)
        mask_h = offs_h < H
        offs_k = tl.arange(0, BLOCK_K)
        mask_k = offs_k < R
        w_i = load_w(w_hh_ptr, offs_h, mask_h, offs_k, mask_k, R, 1)
        w_f = load_w(w_hh_ptr, offs_h + H, mask_h, offs_k, mask_k, R, 1)
        w_g = load_w(w_hh_ptr, offs_h + 2 * H, mask_h, offs_k, mask_k, R, 1)
        w_o = load_w(w_hh_ptr, offs_h + 3 * H, mask_h, offs_k, mask_k, R, 1)
    for s in range(T):
        t = step_time(s, T, rev)
        active = active_rows(len_ptr, offs_b, mask_b, t, T, HAS_LENGTHS)[:, None]  # [BLOCK_B, 1]
        h_read = h_ptr + (s % 2) * B * R
        h_write = h_ptr + ((s + 1) % 2) * B * R
        c_read = c_ptr + (s % 2) * B * H
        c_write = c_ptr + ((s + 1) % 2) * B * H
        for h0 in range(0, H, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            mask_h = offs_h < H
            mask = mask_b[:, None] & mask_h[None, :]
            zero = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
            if W_RESIDENT:
                offs_k = tl.arange(0, BLOCK_K)
                h_prev = tl.load(h_read + offs_b[:, None] * R + offs_k[None, :],
                                 mask=mask_b[:, None] & (offs_k[None, :] < R), other=0.0)  # [BLOCK_B, BLOCK_K]
                acc_i = dot(h_prev, w_i, zero, DOT_FP32, PRECISION)
                acc_f = dot(h_prev, w_f, zero, DOT_FP32, PRECISION)
                acc_g = dot(h_prev, w_g, zero, DOT_FP32, PRECISION)
                acc_o = dot(h_prev, w_o, zero, DOT_FP32, PRECISION)
            else:  # stream W_hh^T: rows q*H + offs_h of W_hh, K = R
                acc_i = matmul(zero, h_read, R, offs_b, mask_b, w_hh_ptr, R, 1, offs_h, mask_h, R,
                               BLOCK_K, DOT_FP32, PRECISION)
                acc_f = matmul(zero, h_read, R, offs_b, mask_b, w_hh_ptr, R, 1, offs_h + H, mask_h, R,
                               BLOCK_K, DOT_FP32, PRECISION)
                acc_g = matmul(zero, h_read, R, offs_b, mask_b, w_hh_ptr, R, 1, offs_h + 2 * H, mask_h, R,
                               BLOCK_K, DOT_FP32, PRECISION)
                acc_o = matmul(zero, h_read, R, offs_b, mask_b, w_hh_ptr, R, 1, offs_h + 3 * H, mask_h, R,
                               BLOCK_K, DOT_FP32, PRECISION)
            xg = xg_ptr + t * stride_xt + offs_b[:, None] * stride_xb + offs_h[None, :]
            i = sigmoid(acc_i + tl.load(xg, mask=mask, other=0.0).to(tl.float32))
            f = sigmoid(acc_f + tl.load(xg + H, mask=mask, other=0.0).to(tl.float32))
            g = tanh(acc_g + tl.load(xg + 2 * H, mask=mask, other=0.0).to(tl.float32))
            o = sigmoid(acc_o + tl.load(xg + 3 * H, mask=mask, other=0.0).to(tl.float32))
            bh = offs_b[:, None] * H + offs_h[None, :]
            c_prev = tl.load(c_read + bh, mask=mask, other=0.0)
            c_new = f * c_prev + i * g
            m = o * tanh(c_new)  # [BLOCK_B, BLOCK_H]
            c_keep = tl.where(active, c_new, c_prev)  # past its end a sequence keeps its state
            tl.store(c_write + bh, c_keep, mask=mask)
            if SAVE:
                g_ptrs = gates_ptr + t * B * 4 * H + offs_b[:, None] * 4 * H + offs_h[None, :]
                tl.store(g_ptrs, i, mask=mask)
                tl.store(g_ptrs + H, f, mask=mask)
                tl.store(g_ptrs + 2 * H, g, mask=mask)
                tl.store(g_ptrs + 3 * H, o, mask=mask)
                tl.store(cs_ptr + t * B * H + bh, c_keep, mask=mask)
            if PROJ:
                tl.store(m_ptr + t * stride_mt + bh, m, mask=mask)
            else:
                h_prev_tile = tl.load(h_read + bh, mask=mask, other=0.0)
                tl.store(h_write + bh, tl.where(active, m, h_prev_tile), mask=mask)
                out = out_ptr + t * stride_ot + offs_b[:, None] * stride_ob + offs_h[None, :]
                tl.store(out, tl.where(active, m, 0.0).to(out_ptr.dtype.element_ty), mask=mask)
        if PROJ:
            tl.debug_barrier()  # every m tile of this step is stored before the projection reads them
            for r0 in range(0, R, BLOCK_H):
                offs_r = r0 + tl.arange(0, BLOCK_H)
                mask_r = offs_r < R
                mask = mask_b[:, None] & mask_r[None, :]
                hp = matmul(tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32), m_ptr + t * stride_mt, H,
                            offs_b, mask_b, w_hr_ptr, H, 1, offs_r, mask_r, H,
                            BLOCK_K, DOT_FP32, PRECISION)  # [BLOCK_B, BLOCK_H] = m W_hr^T
                br = offs_b[:, None] * R + offs_r[None, :]
                h_prev_tile = tl.load(h_read + br, mask=mask, other=0.0)
                tl.store(h_write + br, tl.where(active, hp, h_prev_tile), mask=mask)
                out = out_ptr + t * stride_ot + offs_b[:, None] * stride_ob + offs_r[None, :]
                tl.store(out, tl.where(active, hp, 0.0).to(out_ptr.dtype.element_ty), mask=mask)
        tl.debug_barrier()  # the whole state of step s is stored before step s + 1 reads it


@triton.jit
def lstm_bwd_kernel(
    dout_ptr, stride_dt, stride_db,  # [T, B, D*R] gradient of the output
    w_hh_ptr, w_hh_rev_ptr,          # [4H, R] per direction
    w_hr_ptr, w_hr_rev_ptr,          # [R, H] per direction (PROJ)
    len_ptr,                         # [B] lengths (HAS_LENGTHS)
    gates_ptr, cs_ptr, c0_ptr,       # saved by the forward: [D, T, B, 4H], [D, T, B, H], and c0 [D, B, H], fp32
    dh_ptr, dc_ptr,                  # [D, 2, B, R], [D, 2, B, H] fp32 state; slot 0 holds dh_n, dc_n on entry
    dhs_ptr, stride_dhd, stride_dhs,  # [D, T, B, R] fp32 total dh_t, zero past the end (PROJ: for dW_hr);
                                      # stride_dhs = 0 without projection (one scratch slot)
    dg_ptr,                          # [D, T, B, 4H] fp32 out: gradient of the pre-activation gates
    T, B, H, R,
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, PROJ: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    d, rev = direction(REVERSE)
    if d == 1:
        w_hh_ptr = w_hh_rev_ptr
    if PROJ:
        if d == 1:
            w_hr_ptr = w_hr_rev_ptr
    dout_ptr += d * R
    gates_ptr += d * T * B * 4 * H
    cs_ptr += d * T * B * H
    c0_ptr += d * B * H
    dh_ptr += d * 2 * B * R
    dc_ptr += d * 2 * B * H
    dhs_ptr += d * stride_dhd
    dg_ptr += d * T * B * 4 * H
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    for s in range(T):
        # undo the forward's steps last to first: the forward's walk, reversed
        t = step_time(s, T, rev == 0)
        active = active_rows(len_ptr, offs_b, mask_b, t, T, HAS_LENGTHS)[:, None]
        dh_read = dh_ptr + (s % 2) * B * R
        dh_write = dh_ptr + ((s + 1) % 2) * B * R
        dc_read = dc_ptr + (s % 2) * B * H
        dc_write = dc_ptr + ((s + 1) % 2) * B * H
        dhs = dhs_ptr + t * stride_dhs
        # phase A: total gradient reaching h_t (from step t+1 and from the output)
        for r0 in range(0, R, BLOCK_H):
            offs_r = r0 + tl.arange(0, BLOCK_H)
            mask = mask_b[:, None] & (offs_r[None, :] < R)
            br = offs_b[:, None] * R + offs_r[None, :]
            d_out = tl.load(dout_ptr + t * stride_dt + offs_b[:, None] * stride_db + offs_r[None, :],
                            mask=mask, other=0.0).to(tl.float32)
            dh_tot = tl.load(dh_read + br, mask=mask, other=0.0) + tl.where(active, d_out, 0.0)
            tl.store(dhs + br, tl.where(active, dh_tot, 0.0), mask=mask)
        tl.debug_barrier()
        # phase B: gate gradients, tile by tile of H
        prev_t = step_time(s + 1, T, rev == 0)  # forward step before t (unused when s = T - 1)
        for h0 in range(0, H, BLOCK_H):
            offs_h = h0 + tl.arange(0, BLOCK_H)
            mask_h = offs_h < H
            mask = mask_b[:, None] & mask_h[None, :]
            bh = offs_b[:, None] * H + offs_h[None, :]
            if PROJ:  # dm = dh_tot W_hr: [B, R] x [R, H]
                dm = matmul(tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32), dhs, R, offs_b, mask_b,
                            w_hr_ptr, 1, H, offs_h, mask_h, R, BLOCK_K, DOT_FP32, PRECISION)
            else:
                dm = tl.load(dhs + bh, mask=mask, other=0.0)
            g_ptrs = gates_ptr + t * B * 4 * H + offs_b[:, None] * 4 * H + offs_h[None, :]
            i = tl.load(g_ptrs, mask=mask, other=0.0)
            f = tl.load(g_ptrs + H, mask=mask, other=0.0)
            g = tl.load(g_ptrs + 2 * H, mask=mask, other=0.0)
            o = tl.load(g_ptrs + 3 * H, mask=mask, other=0.0)
            c_t = tl.load(cs_ptr + t * B * H + bh, mask=mask, other=0.0)
            if s == T - 1:
                c_prev = tl.load(c0_ptr + bh, mask=mask, other=0.0)
            else:
                c_prev = tl.load(cs_ptr + prev_t * B * H + bh, mask=mask, other=0.0)
            tanh_c = tanh(c_t)
            dc_in = tl.load(dc_read + bh, mask=mask, other=0.0)
            dc = dc_in + dm * o * (1.0 - tanh_c * tanh_c)
            d_i = tl.where(active, dc * g * i * (1.0 - i), 0.0)
            d_f = tl.where(active, dc * c_prev * f * (1.0 - f), 0.0)
            d_g = tl.where(active, dc * i * (1.0 - g * g), 0.0)
            d_o = tl.where(active, dm * tanh_c * o * (1.0 - o), 0.0)
            tl.store(dc_write + bh, tl.where(active, dc * f, dc_in), mask=mask)
            dg = dg_ptr + t * B * 4 * H + offs_b[:, None] * 4 * H + offs_h[None, :]
            tl.store(dg, d_i, mask=mask)
            tl.store(dg + H, d_f, mask=mask)
            tl.store(dg + 2 * H, d_g, mask=mask)
            tl.store(dg + 3 * H, d_o, mask=mask)
        tl.debug_barrier()
        # phase C: gradient reaching h_{t-1} = dG W_hh ([B, 4H] x [4H, R]); unchanged past the end
        for r0 in range(0, R, BLOCK_H):
            offs_r = r0 + tl.arange(0, BLOCK_H)
            mask_r = offs_r < R
            mask = mask_b[:, None] & mask_r[None, :]
            br = offs_b[:, None] * R + offs_r[None, :]
            dh_prev = matmul(tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32), dg_ptr + t * B * 4 * H, 4 * H,
                             offs_b, mask_b, w_hh_ptr, 1, R, offs_r, mask_r, 4 * H,
                             BLOCK_K, DOT_FP32, PRECISION)
            dh_in = tl.load(dh_read + br, mask=mask, other=0.0)
            tl.store(dh_write + br, tl.where(active, dh_prev, dh_in), mask=mask)
        tl.debug_barrier()


def lstm_fwd(xg, w_hh, w_hr, h0, c0, lengths, out, *, reverse, save, config=None):
    """Run the recurrence of D = len(xg) directions in one launch (grid axis 1: forward, then
    reverse). xg: D tensors [T, B, 4H] with unit last stride and equal strides, w_hh: D tensors
    [4H, R], w_hr: D tensors [R, H] or None, h0: [D, B, R], c0: [D, B, H], lengths: [B] int32 or
    None, out: [T, B, D*R] (unit last stride); `reverse` makes a one-direction launch walk backwards.

    Writes out and returns (h_n [D, B, R] fp32, c_n [D, B, H] fp32, saved) where saved is
    (gates [D, T, B, 4H], c [D, T, B, H], m [D, T, B, H] or None) in fp32 when `save`, else None.
    """
    D = len(xg)
    T, B, G = xg[0].shape
    H, R = G // 4, w_hh[0].shape[1]
    assert xg[0].stride() == xg[-1].stride() and xg[0].stride(-1) == 1
    cfg = launch_config("lstm", "fwd", B, H, R, w_hh[0].dtype, xg[0].device, override=config, save=save)
    f32 = dict(device=xg[0].device, dtype=torch.float32)
    h = torch.empty((D, 2, B, R), **f32)
    c = torch.empty((D, 2, B, H), **f32)
    h[:, 0], c[:, 0] = h0, c0
    proj = w_hr is not None
    gates = torch.empty((D, T, B, 4 * H), **f32) if save else None
    cs = torch.empty((D, T, B, H), **f32) if save else None
    m = torch.empty((D, T if save else 1, B, H), **f32) if proj else None
    w_hr = (None, None) if w_hr is None else w_hr
    lstm_fwd_kernel[(triton.cdiv(B, cfg["BLOCK_B"]), D)](
        xg[0], xg[-1], xg[0].stride(0), xg[0].stride(1), w_hh[0], w_hh[-1], w_hr[0], w_hr[-1],
        lengths, h, c, out, out.stride(0), out.stride(1),
        m, m.stride(0) if proj else 0, H * B if (proj and save) else 0, gates, cs,
        T, B, H, R,
        REVERSE=reverse, HAS_LENGTHS=lengths is not None, PROJ=proj, SAVE=save,
        **kernel_kwargs(cfg, "fwd"),
    )
    return h[:, T % 2], c[:, T % 2], ((gates, cs, m) if save else None)


def lstm_bwd(dout, dh_n, dc_n, w_hh, w_hr, c0, lengths, saved, *, reverse, config=None):
    """Backward of lstm_fwd. dout: [T, B, D*R] (unit last stride), dh_n: [D, B, R], dc_n, c0:
    [D, B, H], w_hh / w_hr as for lstm_fwd, saved: from lstm_fwd. Returns (dG [D, T, B, 4H],
    dh0 [D, B, R], dc0 [D, B, H], dH [D, T, B, R] or None), fp32; dG[d] is the gradient of xg[d],
    dH (with projection) the total gradient of each h_t."""
    gates, cs, _ = saved
    D, T, B, G = gates.shape
    H, R = G // 4, w_hh[0].shape[1]
    cfg = launch_config("lstm", "bwd", B, H, R, w_hh[0].dtype, gates.device, override=config)
    f32 = dict(device=gates.device, dtype=torch.float32)
    dh = torch.empty((D, 2, B, R), **f32)
    dc = torch.empty((D, 2, B, H), **f32)
    dh[:, 0], dc[:, 0] = dh_n, dc_n
    proj = w_hr is not None
    dhs = torch.empty((D, T if proj else 1, B, R), **f32)
    dg = torch.empty((D, T, B, 4 * H), **f32)
    w_hr = (None, None) if w_hr is None else w_hr
    lstm_bwd_kernel[(triton.cdiv(B, cfg["BLOCK_B"]), D)](
        dout, dout.stride(0), dout.stride(1), w_hh[0], w_hh[-1], w_hr[0], w_hr[-1], lengths,
        gates, cs, c0.float().contiguous(), dh, dc, dhs, dhs.stride(0), B * R if proj else 0, dg,
        T, B, H, R,
        REVERSE=reverse, HAS_LENGTHS=lengths is not None, PROJ=proj,
        **kernel_kwargs(cfg, "bwd"),
    )
    return dg, dh[:, T % 2], dc[:, T % 2], (dhs if proj else None)
