"""Building blocks shared by the Elman and LSTM kernels.

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
    e = tl.exp(-2.0 * tl.abs(x))
    # Approximate division (div.full.f32, within 2 ulp) instead of IEEE division's Newton sequence
    # with its slow-path branch: the denominator lies in [1, 2], so nothing is lost that matters.
    t = tl.fdiv(1.0 - e, 1.0 + e, ieee_rounding=False)
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
    if DOT_FP32:
        return tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, w, acc, input_precision=PRECISION)


@triton.jit
def load_w(w_ptr, offs_n, mask_n, offs_k, mask_k, stride_wn, stride_wk):
    """The weight tile w[k, n] = W[n * stride_wn + k * stride_wk] -> [BLOCK_K, BLOCK_N]."""
    ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk
    return tl.load(ptrs, mask=mask_n[None, :] & mask_k[:, None], other=0.0)


@triton.jit
def matmul(acc, s_ptr, stride_sb, offs_b, mask_b, w_ptr, stride_wn, stride_wk, offs_n, mask_n, K,
           BLOCK_K: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
    """acc[b, n] += sum_k S[b, k] * W(k, n) over k < K, streaming K in BLOCK_K tiles.

    S is an fp32 row-major [B, K] buffer (row stride `stride_sb`); W(k, n) is read from
    `w_ptr + n * stride_wn + k * stride_wk`, so one helper serves W and W^T.
    acc: [BLOCK_B, BLOCK_N] fp32.
    """
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        s = tl.load(s_ptr + offs_b[:, None] * stride_sb + offs_k[None, :],
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0)  # [BLOCK_B, BLOCK_K]
        w = load_w(w_ptr, offs_n, mask_n, offs_k, mask_k, stride_wn, stride_wk)  # [BLOCK_K, BLOCK_N]
        acc = dot(s, w, acc, DOT_FP32, PRECISION)
    return acc


@triton.jit
def direction(REVERSE: tl.constexpr):
    """(d, rev) of this program. Grid axis 1 is the direction: a bidirectional layer is one launch
    whose programs (·, 0) walk forward and (·, 1) walk backward in time. REVERSE flips a launch of
    one direction only (the reverse pass on its own). d is int64, for offsets past 2**31."""
    d = tl.cast(tl.program_id(1), tl.int64)
    if REVERSE:
        return d, d == 0
    else:
        return d, d == 1


@triton.jit
def step_time(s, T, rev):
    """Time index of the s-th step a direction takes (int64): s, or T - 1 - s where `rev`."""
    s = tl.cast(s, tl.int64)
    return tl.where(rev, T - 1 - s, s)


@triton.jit
def active_rows(len_ptr, offs_b, mask_b, t, T, HAS_LENGTHS: tl.constexpr):
    """[BLOCK_B] bool: is time t inside each sequence (and the row inside the batch)?"""
    if HAS_LENGTHS:
        length = tl.load(len_ptr + offs_b, mask=mask_b, other=0)
        return mask_b & (t < length)
    else:
        return mask_b & (t < T)
