"""Building blocks of the recurrence skeleton (kernels/recurrence.py), shared by every cell.

Every helper works on fp32 values; weights are read in their storage dtype (fp32, fp16 or bf16).
"""
import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    # exp of a non-positive argument only: no overflow, no NaN for any finite x.
    e = tl.exp(-tl.abs(x))
    r = tl.fdiv(1.0, 1.0 + e, ieee_rounding=False)  # approximate division: see tanh
    return tl.where(x >= 0, r, e * r)


@triton.jit
def tanh(x):
    # tanh|x| = (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1]: finite for any finite x.
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    # Approximate division (div.full.f32, within 2 ulp) instead of IEEE division's Newton sequence
    # with its slow-path branch: the denominator lies in [1, 2], so nothing is lost that matters.
    t = tl.fdiv(1.0 - e, 1.0 + e, ieee_rounding=False)
    # Below 1/16, 1 - e cancels (at |x| = 1e-5 a relative error of 1e-3): the series
    # x - x^3/3 + 2x^5/15 is exact to fp32 there (the next term is below 2e-9 relative).
    a2 = a * a
    t = tl.where(a < 0.0625, a * (1.0 - a2 * (1.0 / 3.0 - a2 * (2.0 / 15.0))), t)
    return tl.where(x >= 0, t, -t)


@triton.jit
def dot(a, w, acc, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a @ w, a: [M, K] fp32 state, w: [K, N] in the weights' dtype, acc: [M, N] fp32.

    The state is rounded to the weights' dtype first, as a tensor-core dot would see it. With
    DOT_FP32 both operands are then widened to fp32 and multiplied exactly: bf16/fp16 products are
    exact in fp32, so this is the same maths as the tensor-core path (and the only one Triton's
    interpreter computes correctly for bf16).
    """
    a = a.to(w.dtype)
    if a.shape[0] == 1:  # one row (B = 1): multiply-add on the CUDA cores, not a 16-row tile
        return acc + tl.sum(a.to(tl.float32)[:, :, None] * w.to(tl.float32)[None, :, :], axis=1)
    elif DOT_FP32:
        return tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, w, acc, input_precision=PRECISION)


@triton.jit
def load_state(s_ptr, stride_sb, offs_b, mask_b, offs_k, K):
    """S[b, k] of a state another program may have written -> [BLOCK_B, BLOCK_K], 0 past B or K.
    Read past L1 (.cg): L1 is not coherent across SMs."""
    return tl.load(s_ptr + offs_b[:, None] * stride_sb + offs_k[None, :],
                   mask=mask_b[:, None] & (offs_k[None, :] < K), other=0.0, cache_modifier=".cg")


@triton.jit
def load_gates_w(w_ptr, n0, N, offs_k, K, stride_wn, stride_wk, gate_stride,
                 GATES: tl.constexpr, BLOCK_N: tl.constexpr):
    """The weight tile of units n0 .. n0 + BLOCK_N - 1 of every gate, as one [BLOCK_K, S * BLOCK_N]
    tile (S = GATES, or 4 for 3 gates: a tile's width is a power of two) whose column c is unit
    n0 + c // S of gate c % S (gates interleaved, so that split_gates takes them apart):
    w[k, c] = W(k, unit) read at w_ptr + gate * gate_stride + unit * stride_wn + k * stride_wk;
    0 past N, K and the last gate."""
    S: tl.constexpr = GATES + (GATES == 3)
    c = tl.arange(0, S * BLOCK_N)
    unit, gate = n0 + c // S, c % S
    ptrs = w_ptr + (unit * stride_wn + gate * gate_stride)[None, :] + offs_k[:, None] * stride_wk
    return tl.load(ptrs, mask=((unit < N) & (gate < GATES))[None, :] & (offs_k < K)[:, None], other=0.0)


@triton.jit
def split_gates(acc, GATES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """[BLOCK_B, S * BLOCK_N] with gates interleaved (see load_gates_w) -> GATES tensors
    [BLOCK_B, BLOCK_N], in gate order."""
    if GATES == 1:
        return (acc,)
    elif GATES == 2:
        return tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_N, 2)))
    else:  # 4 (or 3 and an empty fourth) = 2 x 2: column j * 4 + 2 * q1 + q0
        even, odd = tl.split(tl.reshape(acc, (BLOCK_B, BLOCK_N, 2, 2)))  # q0 = 0: gates 0, 2; q0 = 1: 1, 3
        g0, g2 = tl.split(even)
        g1, g3 = tl.split(odd)
        if GATES == 3:
            return g0, g1, g2
        else:
            return g0, g1, g2, g3


@triton.jit
def join_gates(gates, GATES: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """The inverse of split_gates: GATES tensors [BLOCK_B, BLOCK_N] -> [BLOCK_B, S * BLOCK_N]."""
    if GATES == 1:
        return gates[0]
    elif GATES == 2:
        return tl.reshape(tl.join(gates[0], gates[1]), (BLOCK_B, 2 * BLOCK_N))
    else:
        if GATES == 3:
            last = tl.zeros_like(gates[0])
        else:
            last = gates[3]
        both = tl.join(tl.join(gates[0], gates[2]), tl.join(gates[1], last))  # [.., q1, q0]
        return tl.reshape(both, (BLOCK_B, 4 * BLOCK_N))


@triton.jit
def load_resident(w_ptr, n0, N, K, stride_wn, stride_wk, gate_stride,
                  GATES: tl.constexpr, PIECES: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """A program's slice of W to keep across steps: PIECES tiles from load_gates_w, piece p covering
    k in [p * BLOCK_K, (p + 1) * BLOCK_K)."""
    pieces = ()
    for p in tl.static_range(PIECES):
        offs_k = p * BLOCK_K + tl.arange(0, BLOCK_K)
        pieces = pieces + (load_gates_w(w_ptr, n0, N, offs_k, K, stride_wn, stride_wk, gate_stride,
                                        GATES, BLOCK_N),)
    return pieces


@triton.jit
def matmul(s_ptr, stride_sb, offs_b, mask_b, w_ptr, stride_wn, stride_wk, gate_stride, n0, N, K, resident,
           GATES: tl.constexpr, W_RESIDENT: tl.constexpr, PIECES: tl.constexpr,
           BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
           DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """acc[q][b, n] = sum_k S[b, k] * W(k, n) of gate q (load_gates_w), for units n0 .. n0 +
    BLOCK_N - 1, over k < K: one dot for all gates, then split.

    S is a row-major [B, K] state buffer (row stride `stride_sb`, read with load_state), W(k, n)
    of gate q is read from `w_ptr + q * gate_stride + n * stride_wn + k * stride_wk`, so one helper
    serves W and W^T. W comes from `resident` (from load_resident) when W_RESIDENT, else it is
    streamed in BLOCK_K-wide tiles. -> GATES tensors [BLOCK_B, BLOCK_N] fp32.
    """
    acc = tl.zeros((BLOCK_B, (GATES + (GATES == 3)) * BLOCK_N), dtype=tl.float32)
    if W_RESIDENT:
        for p in tl.static_range(PIECES):
            s = load_state(s_ptr, stride_sb, offs_b, mask_b, p * BLOCK_K + tl.arange(0, BLOCK_K), K)
            acc = dot(s, resident[p], acc, DOT_FP32, PRECISION)
    else:
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            s = load_state(s_ptr, stride_sb, offs_b, mask_b, offs_k, K)  # [BLOCK_B, BLOCK_K]
            w = load_gates_w(w_ptr, n0, N, offs_k, K, stride_wn, stride_wk, gate_stride, GATES, BLOCK_N)
            acc = dot(s, w, acc, DOT_FP32, PRECISION)
    return split_gates(acc, GATES, BLOCK_B, BLOCK_N)


@triton.jit
def direction(reverse):
    """(d, rev) of this program. Grid axis 2 is the direction: a bidirectional layer is one launch
    whose programs (·, ·, 0) walk forward and (·, ·, 1) walk backward in time. `reverse` (a runtime
    0 or 1, so that both directions are one binary) flips a launch of one direction only (the
    reverse pass on its own). d is int64, for offsets past 2**31."""
    d = tl.cast(tl.program_id(2), tl.int64)
    return d, (d + reverse) % 2 == 1


@triton.jit
def step_time(s, T, rev):
    """Time index of the s-th step a direction takes (int64): s, or T - 1 - s where `rev`."""
    s = tl.cast(s, tl.int64)
    return tl.where(rev, T - 1 - s, s)


@triton.jit
def row_lengths(len_ptr, offs_b, mask_b):
    """[BLOCK_B] lengths of the tile's sequences, 0 past B. Every launch passes lengths (T for all
    rows when the caller gave none), so that with and without them is one binary."""
    return tl.load(len_ptr + offs_b, mask=mask_b, other=0)


# Tries of a grid barrier before it gives up: each is one L2 round trip (about 0.3-0.5 us), so this
# is seconds, orders of magnitude past any step, yet it ends.
SPIN_LIMIT = tl.constexpr(1 << 23)
FLAG_EVERY = tl.constexpr(1 << 10)


@triton.jit
def own_tiles(N, BLOCK: tl.constexpr, STRATEGY: tl.constexpr):
    """(base, stop, step): this program owns the BLOCK-wide tiles of N at base + range(0, stop, step).
    rows: all of them (the grid has one program along axis 0); split (and its stepwise launches):
    tile program_id(0) alone, as a loop of the constant one trip, which the compiler removes (a loop
    left around the tile's work makes ptxas keep some of its values on the stack). A program past
    the end of N (R < H with a projection) computes one fully masked tile."""
    if STRATEGY == "rows":
        return 0, N, BLOCK
    else:
        return tl.program_id(0) * BLOCK, 1, 1


@triton.jit
def synchronize(sync_ptr, u, grid_sync, STRATEGY: tl.constexpr):
    """End sub-step u: what any program stored before is visible to every program sharing state
    with it (the same direction and batch tile) after. "rows": one program owns the state, a CTA
    barrier; "split": a grid barrier when `grid_sync` (a split launch), nothing when not (a
    stepwise launch: it runs one sub-step, and launches on a stream run in order). `grid_sync` is
    a runtime 0 or 1, so that split and stepwise are one binary."""
    if STRATEGY == "rows":
        tl.debug_barrier()
    else:
        if grid_sync != 0:
            groups = tl.num_programs(1) * tl.num_programs(2)
            group = tl.program_id(2) * tl.num_programs(1) + tl.program_id(1)
            grid_barrier(sync_ptr + group, sync_ptr + groups, (u + 1) * tl.num_programs(0))


@triton.jit
def grid_barrier(count_ptr, error_ptr, target):
    """Wait until the int32 counter at count_ptr reaches `target`, after adding this program's
    arrival. The counter only grows (zeroed before the launch; target = sub-steps done x programs),
    so no reset races with a late reader. Arrival is a release and the wait an acquire, both at GPU
    scope: the stores before the barrier of every program happen before the loads after it (the
    acquire also invalidates L1, so even a state load the pipeliner turned into a cached cp.async
    sees them). The wait gives up after SPIN_LIMIT tries, or within FLAG_EVERY tries of any
    program having given up, and then sets the error flag at error_ptr, which the launcher turns
    into an error: never a hang. When every program has arrived, the wait is one acquire load."""
    tl.debug_barrier()  # every thread of this program has issued its stores
    tl.atomic_add(count_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
    tries = 0
    while arrived < target:
        arrived = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
        tries += 1
        if tries % FLAG_EVERY == 0:  # has another program given up?
            if (tries >= SPIN_LIMIT) | (tl.atomic_add(error_ptr, 0, sem="relaxed", scope="gpu") != 0):
                tl.atomic_xchg(error_ptr, 1, sem="relaxed", scope="gpu")
                arrived = target
    tl.debug_barrier()
