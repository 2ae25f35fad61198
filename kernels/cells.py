"""What each recurrent cell adds to the one kernel skeleton (kernels/recurrence.py).

A cell is its gate count, whether it carries a cell state c beside h, how many values its backward
reads back, and two small functions chosen by the CELL constexpr: `forward` (activations and state
update) and `backward` (their derivatives). Everything else (direction, state slots, tiling, active
rows, the matmuls, synchronisation, stores) is the skeleton's. Gates come in torch's order and each
sits in its own H-wide column block of W_hh and of the input projection xg.

  elman: h = act(a + x)                                  1 gate
  lstm:  i, f, g, o = sig, sig, tanh, sig of (a + x)     4 gates, i|f|g|o
         c = f * c_prev + i * g,  h = o * tanh(c)
  gru:   r, z = sig(a + x);  n = tanh(x_n + r * (a_n + b_hn))     3 gates, r|z|n
         h = (1 - z) * n + z * h_prev

where a is a gate's recurrent part h_{t-1} W_hh^T and x its input part (x W_ih^T + biases). The
GRU's b_hn sits inside the reset product, so it is not folded into x (rec_bias), and its h_prev
reaches h directly, not only through the matmul (direct). Gates the cell does not have are never
computed (GATES is a constexpr).
"""
from collections import namedtuple

import triton
import triton.language as tl

from .common import sigmoid, tanh

# gates: column blocks of W_hh; has_c: a cell state c; saved: values per unit the backward reads
# (stored by the forward; the Elman's h_t is read from the output itself: from_output);
# rec_bias: a bias added to the recurrent part of the last gate (GRU's b_hn); direct: the gradient
# reaching h_{t-1} has a term besides dA_t W_hh (GRU's dh * z)
Cell = namedtuple("Cell", "gates has_c saved from_output rec_bias direct")
CELLS = {"elman": Cell(gates=1, has_c=False, saved=1, from_output=True, rec_bias=False, direct=False),
         "lstm": Cell(gates=4, has_c=True, saved=4, from_output=False, rec_bias=False, direct=False),
         "gru": Cell(gates=3, has_c=False, saved=5, from_output=False, rec_bias=True, direct=True)}


def constexprs(cell):
    """The skeleton's constexprs that describe `cell`."""
    c = CELLS[cell]
    return dict(CELL=cell, GATES=c.gates, HAS_C=c.has_c, SAVED=c.saved, REC_BIAS=c.rec_bias, DIRECT=c.direct)


@triton.jit
def forward(CELL: tl.constexpr, RELU: tl.constexpr, a, x, c_prev, h_prev, rec_bias):
    """One step of units [BLOCK_B, BLOCK_H]: a, x: the recurrent and input parts of each gate
    (tuples of GATES), c_prev / h_prev: the states before the step, rec_bias: [BLOCK_H] (GRU's
    b_hn) -> (h, c, saved): the output state, the cell state, and the values the backward reads
    back (a tuple of SAVED), fp32."""
    if CELL == "lstm":
        i = sigmoid(a[0] + x[0])
        f = sigmoid(a[1] + x[1])
        g = tanh(a[2] + x[2])
        o = sigmoid(a[3] + x[3])
        c = f * c_prev + i * g
        return o * tanh(c), c, (i, f, g, o)
    elif CELL == "gru":
        r = sigmoid(a[0] + x[0])
        z = sigmoid(a[1] + x[1])
        hn = a[2] + rec_bias[None, :]
        n = tanh(x[2] + r * hn)
        return (1.0 - z) * n + z * h_prev, c_prev, (r, z, n, hn, h_prev)
    else:
        pre = a[0] + x[0]
        if RELU:
            h = tl.where(pre < 0.0, 0.0, pre)  # NaN stays NaN, as in torch.relu (tl.maximum gives 0)
        else:
            h = tanh(pre)
        return h, c_prev, (h,)


@triton.jit
def backward(CELL: tl.constexpr, RELU: tl.constexpr, dh, dc, saved, c, c_prev):
    """Gradients of one step: dh reaches h_t (from the output and step t+1), dc reaches c_t from
    step t+1, saved: what `forward` saved, c / c_prev: c_t / c_{t-1} -> (dx, da, dc_prev, dh_direct):
    the gradients of the gates' input parts and of their recurrent parts (tuples of GATES; the same
    but for the GRU's n gate), of c_{t-1}, and what reaches h_{t-1} directly."""
    if CELL == "lstm":
        i, f, g, o = saved
        tanh_c = tanh(c)
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        d = (dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g),
             dh * tanh_c * o * (1.0 - o))
        return d, d, dc * f, dc
    elif CELL == "gru":
        r, z, n, hn, h_prev = saved
        dn = dh * (1.0 - z) * (1.0 - n * n)
        dz = dh * (h_prev - n) * z * (1.0 - z)
        dr = dn * hn * r * (1.0 - r)
        return (dr, dz, dn), (dr, dz, dn * r), dc, dh * z
    else:
        h = saved[0]
        if RELU:
            d = tl.where(h > 0.0, dh, 0.0)
        else:
            d = dh * (1.0 - h * h)
        return (d,), (d,), dc, dc
