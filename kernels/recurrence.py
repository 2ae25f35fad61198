"""The one recurrence skeleton every cell runs on: a forward and a backward kernel, and `run`, which
launches them by strategy.

Shapes: T steps, B batch, H hidden, R = P (LSTM projection) or H, G gates (kernels/cells.py), D
directions. The input projection xg = x W_ih^T + biases ([T, B, G*H] per direction) is one GEMM
before the forward; the weight gradients are GEMMs after the backward (fastrnn/fused.py).

Grid (programs along H, batch tiles, directions). Axis 2 is the direction: a bidirectional layer is
one launch whose halves each use their own xg, weights, state slots and output columns. Axis 1 tiles
the batch by BLOCK_B; batch tiles never exchange anything. Axis 0 splits the hidden units: program p
owns the BLOCK_H-wide tiles p, p + P, ... of H (and of R), for all gates of those units. The
recurrent state goes through small double buffers: step s reads slot s % 2 of h ([D, 2, B, R], in
the dtype the matmul consumes) and writes slot (s + 1) % 2, so a step needs every program to have
finished the previous one, and nothing more. A step is one or more sub-steps, each ended by
`synchronize`:

  forward:  cell update of the own units (m with a projection) | projection m W_hr^T (PROJ)
  backward: total dh_t of the own R units (PROJ) | gate gradients dG_t of the own units |
            dh_{t-1} = dG_t W_hh of the own R units

The strategy (kernels/config.py) decides who owns what and how sub-steps are separated:
  rows      P = 1: one program owns whole batch rows for all T steps; a CTA barrier.
  split     P = cdiv(H, BLOCK_H): every program owns one tile; a grid barrier per sub-step
            (kernels/common.py), the grid launched cooperatively so that it is co-resident.
  stepwise  the split kernel, the same binary: its grid launched once per sub-step with
            grid_sync = 0, so no barrier. The interpreter's twin of split (it runs programs one
            after another) and split's fallback.
Flags that only steer (the direction of a one-direction launch, split or stepwise) are runtime
arguments, and lengths are always passed (T for every row when the caller gave none): each
binary serves every setting of them, so what `python -m fastrnn inspect` checks and what the
interpreter runs in CI is the code a GPU runs.
With W_RESIDENT a program's slice of W_hh (forward: its units' rows; backward: its R units'
columns) is loaded once before the time loop and kept on chip.
"""
import torch
import triton
import triton.language as tl

from . import cells
from .common import (
    direction,
    dot,
    join_gates,
    load_gates_w,
    load_resident,
    matmul,
    own_tiles,
    row_lengths,
    step_time,
    synchronize,
)
from .config import kernel_kwargs, launch_config, programs_per_sm


@triton.jit
def store_h(h_prev, h_write, out_ptr, stride_ot, stride_ob, t, offs_b, offs_n, mask, active, R, h):
    """Store a tile of h_t: into the state (a row past its sequence's end keeps its state, h_prev)
    and into the output (zero there)."""
    bn = offs_b[:, None] * R + offs_n[None, :]
    tl.store(h_write + bn, tl.where(active, h, h_prev).to(h_write.dtype.element_ty), mask=mask)
    out = out_ptr + t * stride_ot + offs_b[:, None] * stride_ob + offs_n[None, :]
    tl.store(out, tl.where(active, h, 0.0).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["reverse", "grid_sync", "first", "count"])
def forward_kernel(
    xg_ptr, xg_rev_ptr, stride_xt, stride_xb,  # [T, B, G*H] input projection per direction (biases in)
    w_hh_ptr, w_hh_rev_ptr,         # [G*H, R] per direction
    w_hr_ptr, w_hr_rev_ptr,         # [R, H] per direction (PROJ)
    rb_ptr, rb_rev_ptr,             # [H] per direction: the last gate's recurrent bias (REC_BIAS: GRU's b_hn)
    len_ptr,                        # [B] int32 lengths (T for every row when the caller gave none)
    h_ptr, c_ptr,                   # [D, 2, B, R] weights' dtype, [D, 2, B, H] fp32 (HAS_C); slot 0 holds h0, c0
    out_ptr, stride_ot, stride_ob,  # [T, B, D*R] output h_t, zero past a sequence's end
    m_ptr, stride_md, stride_mt,    # [D, T, B, H] fp32 pre-projection h (PROJ; stride_mt = 0: one scratch slot)
    save_ptr, cs_ptr,               # [D, T, B, SAVED*H] what the backward reads, [D, T, B, H] c_t, fp32 (SAVE)
    sync_ptr,                       # int32 [D * batch tiles + 1]: barrier counters, error flag (not rows)
    T, B, H, R, reverse, grid_sync,  # runtime 0 / 1 flags (one binary for both): see direction, synchronize
    first, count,                   # this launch runs sub-steps first .. first + count - 1
    CELL: tl.constexpr, GATES: tl.constexpr, HAS_C: tl.constexpr, SAVED: tl.constexpr,
    REC_BIAS: tl.constexpr, DIRECT: tl.constexpr,
    STRATEGY: tl.constexpr, RELU: tl.constexpr,
    PROJ: tl.constexpr, SAVE: tl.constexpr, W_RESIDENT: tl.constexpr, PIECES: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    d, rev = direction(reverse)
    if d == 1:
        xg_ptr = xg_rev_ptr
        w_hh_ptr = w_hh_rev_ptr
    if REC_BIAS:
        if d == 1:
            rb_ptr = rb_rev_ptr
    if PROJ:
        if d == 1:
            w_hr_ptr = w_hr_rev_ptr
        m_ptr += d * stride_md
    if SAVE:
        save_ptr += d * T * B * SAVED * H
        if HAS_C:
            cs_ptr += d * T * B * H
    if HAS_C:
        c_ptr += d * 2 * B * H
    h_ptr += d * 2 * B * R
    out_ptr += d * R
    pid = tl.program_id(0)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    length = row_lengths(len_ptr, offs_b, mask_b)
    resident = 0
    if W_RESIDENT:  # the program's one tile of units: its rows of W_hh, as W_hh^T tiles
        resident = load_resident(w_hh_ptr, pid * BLOCK_H, H, R, R, 1, H * R, GATES, PIECES, BLOCK_H, BLOCK_K)
    SUBSTEPS: tl.constexpr = 2 if PROJ else 1
    for u in range(first, first + count):
        s = u // SUBSTEPS
        t = step_time(s, T, rev)
        active = (t < length)[:, None]  # [BLOCK_B, 1]: inside its sequence (and the batch)
        h_read = h_ptr + (s % 2) * B * R
        h_write = h_ptr + ((s + 1) % 2) * B * R
        if u % SUBSTEPS == 0:
            base, stop, step = own_tiles(H, BLOCK_H, STRATEGY)
            for i in range(0, stop, step):
                h0 = base + i
                offs_h = h0 + tl.arange(0, BLOCK_H)
                mask = mask_b[:, None] & (offs_h[None, :] < H)
                a = matmul(h_read, R, offs_b, mask_b, w_hh_ptr, R, 1, H * R, h0, H, R, resident,
                           GATES, W_RESIDENT, PIECES, BLOCK_B, BLOCK_H, BLOCK_K, DOT_FP32, PRECISION)
                xg = xg_ptr + t * stride_xt + offs_b[:, None] * stride_xb + offs_h[None, :]
                x = ()
                for q in tl.static_range(GATES):
                    x = x + (tl.load(xg + q * H, mask=mask, other=0.0).to(tl.float32),)
                bh = offs_b[:, None] * H + offs_h[None, :]
                c_prev = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
                h_prev = c_prev
                if HAS_C:
                    c_prev = tl.load(c_ptr + (s % 2) * B * H + bh, mask=mask, other=0.0)
                if not PROJ:  # R == H: the units' own previous state
                    h_prev = tl.load(h_read + offs_b[:, None] * R + offs_h[None, :], mask=mask, other=0.0,
                                     cache_modifier=".cg").to(tl.float32)
                rec_bias = tl.zeros((BLOCK_H,), dtype=tl.float32)
                if REC_BIAS:
                    rec_bias = tl.load(rb_ptr + offs_h, mask=offs_h < H, other=0.0).to(tl.float32)
                h, c, saved = cells.forward(CELL, RELU, a, x, c_prev, h_prev, rec_bias)
                c = tl.where(active, c, c_prev)  # past its end a sequence keeps its state
                if HAS_C:
                    tl.store(c_ptr + ((s + 1) % 2) * B * H + bh, c, mask=mask)
                if SAVE:
                    sp = save_ptr + t * B * SAVED * H + offs_b[:, None] * SAVED * H + offs_h[None, :]
                    for q in tl.static_range(SAVED):
                        tl.store(sp + q * H, saved[q], mask=mask)
                    if HAS_C:
                        tl.store(cs_ptr + t * B * H + bh, c, mask=mask)
                if PROJ:
                    tl.store(m_ptr + t * stride_mt + bh, h, mask=mask)
                else:
                    store_h(h_prev, h_write, out_ptr, stride_ot, stride_ob, t, offs_b, offs_h, mask, active, R, h)
        if PROJ:
            if u % SUBSTEPS == 1:  # h_t = m_t W_hr^T for the own units of R
                base, stop, step = own_tiles(R, BLOCK_H, STRATEGY)
                for i in range(0, stop, step):
                    r0 = base + i
                    offs_r = r0 + tl.arange(0, BLOCK_H)
                    mask_r = offs_r < R
                    hp = matmul(m_ptr + t * stride_mt, H, offs_b, mask_b, w_hr_ptr, H, 1, 0, r0, R, H,
                                0, 1, False, 1, BLOCK_B, BLOCK_H, BLOCK_K, DOT_FP32, PRECISION)[0]
                    mask = mask_b[:, None] & mask_r[None, :]
                    h_prev = tl.load(h_read + offs_b[:, None] * R + offs_r[None, :], mask=mask, other=0.0,
                                     cache_modifier=".cg")
                    store_h(h_prev, h_write, out_ptr, stride_ot, stride_ob, t, offs_b, offs_r, mask, active, R, hp)
        synchronize(sync_ptr, u, grid_sync, STRATEGY)


@triton.jit
def partial_dh(dg, acc_ptr, first_tile, offs_b, mask_b, w_ptr, h0, H, R, resident, GATES: tl.constexpr,
               W_RESIDENT: tl.constexpr, PIECES: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
               DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """Add this tile's share of dh_{t-1} = dG_t W_hh, dg [BLOCK_B, GATES * BLOCK_H] (gates
    interleaved) times its units' rows of W_hh, to the [B, R] fp32 sum at acc_ptr, which the first
    tile of a program overwrites. The rows of W_hh are the forward's tiles (load_gates_w over
    k = R: resident, or streamed), transposed."""
    if W_RESIDENT:
        for p in tl.static_range(PIECES):
            add_share(dg, resident[p], acc_ptr, first_tile, offs_b, mask_b, p * BLOCK_K + tl.arange(0, BLOCK_K), R,
                      DOT_FP32, PRECISION)
    else:
        for r0 in range(0, R, BLOCK_K):
            offs_r = r0 + tl.arange(0, BLOCK_K)
            w = load_gates_w(w_ptr, h0, H, offs_r, R, R, 1, H * R, GATES, BLOCK_H)
            add_share(dg, w, acc_ptr, first_tile, offs_b, mask_b, offs_r, R, DOT_FP32, PRECISION)


@triton.jit
def add_share(dg, w, acc_ptr, first_tile, offs_b, mask_b, offs_r, R, DOT_FP32: tl.constexpr,
              PRECISION: tl.constexpr):
    """acc[:, offs_r] (+)= dg @ w^T: w [BLOCK_K, G * BLOCK_H] holds the rows of W_hh at columns offs_r."""
    if dg.shape[0] == 1:  # one row: dg @ w^T on the CUDA cores
        mask = mask_b[:, None] & (offs_r[None, :] < R)
        ptrs = acc_ptr + offs_b[:, None] * R + offs_r[None, :]
        acc = tl.zeros((1, offs_r.shape[0]), dtype=tl.float32)
        if not first_tile:
            acc = tl.load(ptrs, mask=mask, other=0.0)
        tl.store(ptrs, dot(dg, tl.trans(w), acc, DOT_FP32, PRECISION), mask=mask)
    else:  # (w @ dg^T)^T: w, already on chip, is the tile with many rows (the dot's M), dg^T the narrow one
        mask = mask_b[None, :] & (offs_r[:, None] < R)
        ptrs = acc_ptr + offs_b[None, :] * R + offs_r[:, None]
        acc = tl.zeros((offs_r.shape[0], dg.shape[0]), dtype=tl.float32)
        if not first_tile:
            acc = tl.load(ptrs, mask=mask, other=0.0)
        tl.store(ptrs, dot(w, tl.trans(dg).to(w.dtype), acc, DOT_FP32, PRECISION), mask=mask)


@triton.jit(do_not_specialize=["reverse", "grid_sync", "first", "count"])
def backward_kernel(
    dout_ptr, stride_dt, stride_db,  # [T, B, D*R] gradient of the output
    save_ptr, stride_sd, stride_st, stride_sb,  # what the forward saved: SAVED values per unit, H apart
    w_hh_ptr, w_hh_rev_ptr,          # [G*H, R] per direction
    w_hr_ptr, w_hr_rev_ptr,          # [R, H] per direction (PROJ)
    len_ptr,                         # [B] int32 lengths, as in forward_kernel
    cs_ptr, c0_ptr,                  # [D, T, B, H] c_t and [D, B, H] c0, fp32 (HAS_C)
    dh_ptr, dc_ptr,                  # [D, B, R] fp32 gradient reaching h (dh_n on entry, dh0 on exit);
                                     # [D, 2, B, H] fp32 reaching c (slot 0 holds dc_n)
    part_ptr,                        # [D, 2, P, B, R] fp32: each program's share of dh_{t-1}, per step parity
    direct_ptr,                      # [D, B, R] fp32: what reaches h_{t-1} besides dA W_hh (DIRECT)
    da_ptr,                          # [D, T, B, H] fp32 out: the last gate's recurrent-part gradient (REC_BIAS)
    dhs_ptr, stride_dhd,             # [D, T, B, R] fp32 total dh_t, zero past the end (PROJ: for dW_hr)
    dg_ptr,                          # [D, T, B, G*H] fp32 out: gradient of the gates' pre-activations
    sync_ptr,                        # as in forward_kernel
    T, B, H, R, reverse, grid_sync,  # as in forward_kernel
    first, count,                    # sub-steps: SUBSTEPS per step, then one that only sums the last shares
    CELL: tl.constexpr, GATES: tl.constexpr, HAS_C: tl.constexpr, SAVED: tl.constexpr,
    REC_BIAS: tl.constexpr, DIRECT: tl.constexpr,
    STRATEGY: tl.constexpr, RELU: tl.constexpr,
    PROJ: tl.constexpr, W_RESIDENT: tl.constexpr, PIECES: tl.constexpr,
    DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Walks the forward's steps last to first. dh_{t-1} = dG_t W_hh is split by rows of W_hh (k):
    each program multiplies the dG of its own units by their rows of W_hh and stores that share of
    dh_{t-1} for all of R; after the barrier each program sums the shares of its own R units, in
    program order (deterministic). So a step needs one barrier (two with a projection, whose
    dm = dh_t W_hr needs all of dh_t), and a program needs only its own rows of W_hh, the same
    slice as in the forward."""
    d, rev = direction(reverse)
    if d == 1:
        w_hh_ptr = w_hh_rev_ptr
    if PROJ:
        if d == 1:
            w_hr_ptr = w_hr_rev_ptr
        dhs_ptr += d * stride_dhd
    if HAS_C:
        cs_ptr += d * T * B * H
        c0_ptr += d * B * H
        dc_ptr += d * 2 * B * H
    pid, programs = tl.program_id(0), tl.num_programs(0)
    dout_ptr += d * R
    save_ptr += d * stride_sd
    dh_ptr += d * B * R
    part_ptr += d * 2 * programs * B * R
    if DIRECT:
        direct_ptr += d * B * R
    if REC_BIAS:
        da_ptr += d * T * B * H
    dg_ptr += d * T * B * GATES * H
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    length = row_lengths(len_ptr, offs_b, mask_b)
    resident = 0
    if W_RESIDENT:  # the program's one tile of units: its rows of W_hh, as in the forward
        resident = load_resident(w_hh_ptr, pid * BLOCK_H, H, R, R, 1, H * R, GATES, PIECES, BLOCK_H, BLOCK_K)
    SUBSTEPS: tl.constexpr = 2 if PROJ else 1
    for u in range(first, first + count):
        s = u // SUBSTEPS
        sub = u % SUBSTEPS
        t = step_time(s, T, rev == 0)  # undo the forward's steps, last to first
        active = (t < length)[:, None]
        if sub == 0:  # dh reaching h_t: the shares of step s - 1 (a row past its end keeps its dh)
            t_next = step_time(s - 1, T, rev == 0)  # the forward's step after t
            active_next = (t_next < length)[:, None] & (s > 0)
            # (the masks of loads and stores below hold no scalar condition: the interpreter rejects one)
            parts = part_ptr + ((s + 1) % 2) * programs * B * R
            base, stop, step = own_tiles(R, BLOCK_H, STRATEGY)
            for i in range(0, stop, step):
                r0 = base + i
                offs_r = r0 + tl.arange(0, BLOCK_H)
                mask = mask_b[:, None] & (offs_r[None, :] < R)
                br = offs_b[:, None] * R + offs_r[None, :]
                total = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
                for q in range(0, programs):
                    total += tl.load(parts + q * B * R + br, mask=mask, other=0.0, cache_modifier=".cg")
                if DIRECT:
                    total += tl.load(direct_ptr + br, mask=mask, other=0.0)
                dh = tl.where(active_next, total, tl.load(dh_ptr + br, mask=mask, other=0.0))
                tl.store(dh_ptr + br, dh, mask=mask)
                if PROJ:  # the total dh_t, for dm = dh_t W_hr (and dW_hr)
                    if s < T:
                        d_out = tl.load(dout_ptr + t * stride_dt + offs_b[:, None] * stride_db + offs_r[None, :],
                                        mask=mask, other=0.0).to(tl.float32)
                        tl.store(dhs_ptr + t * B * R + br, tl.where(active, dh + d_out, 0.0), mask=mask)
            tl.debug_barrier()  # the dh just stored is read by other threads below
        if (sub == SUBSTEPS - 1) and (s < T):  # gate gradients of the own units, and their share of dh_{t-1}
            base, stop, step = own_tiles(H, BLOCK_H, STRATEGY)
            for i in range(0, stop, step):
                h0 = base + i
                offs_h = h0 + tl.arange(0, BLOCK_H)
                mask = mask_b[:, None] & (offs_h[None, :] < H)
                bh = offs_b[:, None] * H + offs_h[None, :]
                if PROJ:  # dm = dh_t W_hr: [B, R] x [R, H]
                    dh = matmul(dhs_ptr + t * B * R, R, offs_b, mask_b, w_hr_ptr, 1, H, 0, h0, H, R,
                                0, 1, False, 1, BLOCK_B, BLOCK_H, BLOCK_K, DOT_FP32, PRECISION)[0]
                else:
                    d_out = tl.load(dout_ptr + t * stride_dt + offs_b[:, None] * stride_db + offs_h[None, :],
                                    mask=mask, other=0.0).to(tl.float32)
                    dh = tl.load(dh_ptr + bh, mask=mask, other=0.0) + tl.where(active, d_out, 0.0)
                sp = save_ptr + t * stride_st + offs_b[:, None] * stride_sb + offs_h[None, :]
                saved = ()
                for q in tl.static_range(SAVED):
                    saved = saved + (tl.load(sp + q * H, mask=mask, other=0.0).to(tl.float32),)
                c = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
                c_prev = c
                dc = c
                if HAS_C:
                    c = tl.load(cs_ptr + t * B * H + bh, mask=mask, other=0.0)
                    if s == T - 1:
                        c_prev = tl.load(c0_ptr + bh, mask=mask, other=0.0)
                    else:
                        prev_t = step_time(s + 1, T, rev == 0)  # the forward's step before t
                        c_prev = tl.load(cs_ptr + prev_t * B * H + bh, mask=mask, other=0.0)
                    dc = tl.load(dc_ptr + (s % 2) * B * H + bh, mask=mask, other=0.0)
                dx, da, dc_prev, dh_direct = cells.backward(CELL, RELU, dh, dc, saved, c, c_prev)
                dg = dg_ptr + t * B * GATES * H + offs_b[:, None] * GATES * H + offs_h[None, :]
                kept = ()
                for q in tl.static_range(GATES):
                    tl.store(dg + q * H, tl.where(active, dx[q], 0.0), mask=mask)
                    kept = kept + (tl.where(active, da[q], 0.0),)
                if REC_BIAS:
                    tl.store(da_ptr + t * B * H + bh, kept[GATES - 1], mask=mask)
                if DIRECT:
                    tl.store(direct_ptr + offs_b[:, None] * R + offs_h[None, :], tl.where(active, dh_direct, 0.0),
                             mask=mask)
                if HAS_C:
                    tl.store(dc_ptr + ((s + 1) % 2) * B * H + bh, tl.where(active, dc_prev, dc), mask=mask)
                if STRATEGY == "rows":
                    first_tile = h0 == 0
                else:
                    first_tile = True  # one tile per program
                partial_dh(join_gates(kept, GATES, BLOCK_B, BLOCK_H), part_ptr + ((s % 2) * programs + pid) * B * R,
                           first_tile, offs_b, mask_b, w_hh_ptr, h0, H, R, resident, GATES,
                           W_RESIDENT, PIECES, BLOCK_H, BLOCK_K, DOT_FP32, PRECISION)
        synchronize(sync_ptr, u, grid_sync, STRATEGY)


def run(kernel, cfg, cell, total, T, B, H, R, D, args, device, reverse, **flags):
    """Launch `kernel` (forward_kernel or backward_kernel) with `args` (its arguments before
    sync_ptr) over `total` sub-steps, as cfg["STRATEGY"] says."""
    strategy = cfg["STRATEGY"]
    grid = (1 if strategy == "rows" else triton.cdiv(H, cfg["BLOCK_H"]), triton.cdiv(B, cfg["BLOCK_B"]), D)
    kwargs = {**flags, **cells.constexprs(cell), **kernel_kwargs(cfg),
              "STRATEGY": "rows" if strategy == "rows" else "split"}  # stepwise runs the split kernel
    sync = None if strategy == "rows" else torch.zeros(grid[1] * D + 1, dtype=torch.int32, device=device)
    full = (*args, sync, T, B, H, R, int(reverse), int(strategy == "split"))
    if strategy == "stepwise":
        for u in range(total):
            kernel[grid](*full, u, 1, **kwargs)
    elif strategy == "rows":
        kernel[grid](*full, 0, total, **kwargs)
    else:
        full = (*full, 0, total)
        kwargs["launch_cooperative_grid"] = True  # part of the compile options: the binary checked is the one run
        fits = co_resident(kernel.warmup(*full, grid=grid, **kwargs), grid, device)
        if not fits and cfg["FALLBACK"]:
            return run(kernel, dict(cfg, STRATEGY="stepwise"), cell, total, T, B, H, R, D, args, device, reverse,
                       **flags)
        if not fits:
            raise ValueError(f"the 'split' grid {grid} cannot be co-resident on this GPU with this kernel's "
                             f"registers and shared memory (a grid barrier would hang); use 'stepwise' or "
                             f"larger BLOCK_H / BLOCK_B: {cfg}")
        kernel[grid](*full, **kwargs)
        # a device-side assert: asynchronous, and fatal to the process's CUDA context (no host sync
        # per launch, and no wrong output goes on unnoticed)
        torch._assert_async(sync[-1] == 0, "fastrnn: a grid barrier of the 'split' strategy timed out, so "
                            "this output is wrong; restart with FASTRNN_TRITON_STRATEGY=stepwise and report it")


def all_lengths(lengths, T, B, device):
    """The kernels' lengths: the caller's, or T for every row."""
    return torch.full((B,), T, dtype=torch.int32, device=device) if lengths is None else lengths


def co_resident(compiled, grid, device):
    """Can every program of `grid` of the compiled kernel be resident at once on `device`?"""
    compiled._init_handles()  # loads the binary: registers are known from then on
    props = torch.cuda.get_device_properties(device)
    per_sm = programs_per_sm(compiled.n_regs, compiled.metadata.shared, compiled.metadata.num_warps, props)
    return per_sm * props.multi_processor_count >= grid[0] * grid[1] * grid[2]


def forward(cell, xg, w_hh, h0, lengths, out, *, c0=None, w_hr=None, rec_bias=None, reverse=False, relu=False,
            save=False, config=None):
    """Run the recurrence of `cell` for D = len(xg) directions in one launch (the forward direction
    first). xg: D tensors [T, B, G*H] with unit last stride and equal strides, w_hh: D tensors
    [G*H, R], w_hr: D tensors [R, H] or None, rec_bias: D tensors [H] (GRU's b_hn), h0: [D, B, R],
    c0: [D, B, H] (a cell with c),
    lengths: [B] int32 or None, out: [T, B, D*R] (unit last stride); `reverse` makes a
    one-direction launch walk backwards, `relu` picks the Elman activation.

    Writes out and returns (h_n [D, B, R] in the weights' dtype, c_n [D, B, H] fp32 or None,
    saved), saved = (values [D, T, B, SAVED*H] or None, c [D, T, B, H] or None, m [D, T, B, H] or
    None) in fp32 when `save`, else None: what `backward` needs besides the output.
    """
    desc = cells.CELLS[cell]
    D = len(xg)
    T, B, _ = xg[0].shape
    R, H = w_hh[0].shape[1], w_hh[0].shape[0] // desc.gates
    device = xg[0].device
    assert xg[0].stride() == xg[-1].stride() and xg[0].stride(-1) == 1
    cfg = launch_config(cell, "fwd", B, H, R, w_hh[0].dtype, device, override=config, save=save, directions=D)
    f32 = dict(device=device, dtype=torch.float32)
    h = torch.empty((D, 2, B, R), device=device, dtype=w_hh[0].dtype)
    h[:, 0] = h0
    c = None
    if desc.has_c:
        c = torch.empty((D, 2, B, H), **f32)
        c[:, 0] = c0
    proj = w_hr is not None
    values = torch.empty((D, T, B, desc.saved * H), **f32) if save and not desc.from_output else None
    cs = torch.empty((D, T, B, H), **f32) if save and desc.has_c else None
    m = torch.empty((D, T if save else 1, B, H), **f32) if proj else None
    w_hr = (None, None) if w_hr is None else w_hr
    rb = (None, None) if rec_bias is None else rec_bias
    args = (xg[0], xg[-1], xg[0].stride(0), xg[0].stride(1), w_hh[0], w_hh[-1], w_hr[0], w_hr[-1], rb[0], rb[-1],
            all_lengths(lengths, T, B, device), h, c, out, out.stride(0), out.stride(1), m, m.stride(0) if proj else 0,
            H * B if (proj and save) else 0, values, cs)
    run(forward_kernel, cfg, cell, T * (2 if proj else 1), T, B, H, R, D, args, device,
        reverse, RELU=relu, PROJ=proj, SAVE=values is not None)
    return h[:, T % 2], (c[:, T % 2] if desc.has_c else None), ((values, cs, m) if save else None)


def backward(cell, dout, dh_n, out, w_hh, lengths, saved, *, dc_n=None, c0=None, w_hr=None, reverse=False,
             relu=False, config=None):
    """Backward of `forward`. dout, out: [T, B, D*R] (unit last stride), dh_n: [D, B, R], dc_n, c0:
    [D, B, H] (a cell with c), w_hh / w_hr as for `forward`, saved: from `forward` (None for a cell
    that reads its output). Returns (dG [D, T, B, G*H], dh0 [D, B, R], dc0 [D, B, H] or None,
    dH [D, T, B, R] or None, dA [D, T, B, H] or None) in fp32: dG[d] is the gradient of xg[d], dH
    (with a projection) the total gradient of each h_t, dA (GRU) that of the last gate's recurrent
    part W_hn h + b_hn (its dG is that of its input part)."""
    desc = cells.CELLS[cell]
    D, B, R = dh_n.shape
    T = dout.shape[0]
    H = w_hh[0].shape[0] // desc.gates
    device = dout.device
    cfg = launch_config(cell, "bwd", B, H, R, w_hh[0].dtype, device, override=config, directions=D)
    f32 = dict(device=device, dtype=torch.float32)
    dh = dh_n.to(torch.float32, copy=True).contiguous()
    dc = cs = None
    if desc.has_c:
        dc = torch.empty((D, 2, B, H), **f32)
        dc[:, 0] = dc_n
        cs, c0 = saved[1], c0.float().contiguous()
    if desc.from_output:  # direction d's values are its columns of out
        source = (out, H, out.stride(0), out.stride(1))
    else:
        v = saved[0]
        source = (v, v.stride(0), v.stride(1), v.stride(2))
    programs = 1 if cfg["STRATEGY"] == "rows" else triton.cdiv(H, cfg["BLOCK_H"])
    parts = torch.empty((D, 2, programs, B, R), **f32)
    proj = w_hr is not None
    dhs = torch.empty((D, T, B, R), **f32) if proj else None
    dg = torch.empty((D, T, B, desc.gates * H), **f32)
    direct = torch.empty((D, B, R), **f32) if desc.direct else None
    da = torch.empty((D, T, B, H), **f32) if desc.rec_bias else None
    w_hr = (None, None) if w_hr is None else w_hr
    args = (dout, dout.stride(0), dout.stride(1), *source, w_hh[0], w_hh[-1], w_hr[0], w_hr[-1],
            all_lengths(lengths, T, B, device),
            cs, c0, dh, dc, parts, direct, da, dhs, dhs.stride(0) if proj else 0, dg)
    run(backward_kernel, cfg, cell, T * (2 if proj else 1) + 1, T, B, H, R, D, args, device,
        reverse, RELU=relu, PROJ=proj)
    return dg, dh, (dc[:, T % 2] if desc.has_c else None), dhs, da
