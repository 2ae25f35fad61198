"""What each recurrent cell adds to the one kernel skeleton (kernels/recurrence.py).

A cell is its gate count, whether it carries a cell state c beside h, how many values its backward
reads back, and two small functions chosen by the CELL constexpr: `forward` (activations and state
update) and `backward` (their derivatives). Everything else (direction, state slots, tiling, active
rows, the matmuls, synchronisation, stores) is the skeleton's. Gates come in torch's order and each
sits in its own H-wide column block of W_hh and of the input projection xg.

  elman: h = act(a + x)                                  1 gate
  lstm:  i, f, g, o = sig, sig, tanh, sig of (a + x)     4 gates, i|f|g|o
         c = f * c_prev + i * g,  h = o * tanh(c)

where a is a gate's recurrent part h_{t-1} W_hh^T and x its input part (x W_ih^T + biases).
The functions take four gates whatever the cell; a cell with fewer ignores the rest, and the
skeleton never computes them (GATES is a constexpr).
"""
from collections import namedtuple

import triton
import triton.language as tl

from .common import sigmoid, tanh

# gates: column blocks of W_hh; has_c: a cell state c; saved: values per unit the backward reads
# (the LSTM's activated gates, stored by the forward; the Elman's h_t, read from the output itself:
# from_output)
Cell = namedtuple("Cell", "gates has_c saved from_output")
CELLS = {"elman": Cell(gates=1, has_c=False, saved=1, from_output=True),
         "lstm": Cell(gates=4, has_c=True, saved=4, from_output=False)}


def constexprs(cell):
    """The skeleton's constexprs that describe `cell`."""
    c = CELLS[cell]
    return dict(CELL=cell, GATES=c.gates, HAS_C=c.has_c, SAVED=c.saved)


@triton.jit
def forward(CELL: tl.constexpr, RELU: tl.constexpr, a, x, c_prev):
    """One step of units [BLOCK_B, BLOCK_H]: a, x: the recurrent and input parts of each gate
    (tuples of GATES), c_prev: the cell state (unused without one) -> (h, c, saved): the output
    state, the cell state, and the values the backward reads back (a tuple of SAVED), fp32."""
    if CELL == "lstm":
        i = sigmoid(a[0] + x[0])
        f = sigmoid(a[1] + x[1])
        g = tanh(a[2] + x[2])
        o = sigmoid(a[3] + x[3])
        c = f * c_prev + i * g
        return o * tanh(c), c, (i, f, g, o)
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
    step t+1, saved: what `forward` saved, c / c_prev: c_t / c_{t-1} -> (d, dc_prev): the gradients
    of the gates' pre-activations (a tuple of GATES) and of c_{t-1}."""
    if CELL == "lstm":
        i, f, g, o = saved
        tanh_c = tanh(c)
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        return (dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g),
                dh * tanh_c * o * (1.0 - o)), dc * f
    else:
        h = saved[0]
        if RELU:
            d = tl.where(h > 0.0, dh, 0.0)
        else:
            d = dh * (1.0 - h * h)
        return (d,), dc
