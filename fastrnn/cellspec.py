"""One description per recurrent cell, read by every layer of fastrnn instead of `if mode == ...`.

A `CellSpec` says what differs between the Elman RNN, the LSTM and the GRU: the gate count and
order, which states the cell carries (h, or h and c), whether it projects, which of its biases fold
into the input GEMM, its float64 reference step and layer (fastrnn/reference.py), the name of its
fused op (fastrnn/fused.py), torch.nn's classes and torch's own `_VF` functions. `of(mode)` finds
the cell of a torch.nn mode ('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU') or class name ('RNN', 'LSTM',
'GRU', 'RNNCell', 'LSTMCell', 'GRUCell').

The maths of each cell is in fastrnn/reference.py's docstring (once).
"""
from dataclasses import dataclass, field

import torch

from . import reference

__all__ = ["CellSpec", "ELMAN", "LSTM", "GRU", "CELLS", "of"]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per cell
class CellSpec:
    name: str                # fastrnn's name of the cell: fused.<name>_directions, kernels' CELL
    torch_name: str          # torch.nn's layer class; the cell class is torch_name + "Cell"
    modes: dict              # torch.nn mode -> its `_VF` function name
    cell_vf: str             # `_VF` function of torch.nn's cell class
    gates: int               # G: gate blocks of H rows in W_ih, W_hh and the biases
    gate_order: str          # how those blocks are ordered
    states: tuple            # what the recurrence carries: ("h",) or ("h", "c")
    # How many gate blocks of b_hh fold into the input GEMM (xg = x W_ih^T + b_ih + b_hh): all of
    # them, except the GRU's b_hn, which sits inside the reset product r * (W_hn h + b_hn).
    folded_hh_gates: int
    projects: bool = False   # may project h (proj_size > 0): a fifth weight w_hr per direction
    # Which of torch.nn's classes ("layer", "cell") run only their GEMMs in the autocast dtype under
    # CPU autocast (their op is not on autocast's CPU list; the linear ops it decomposes into are)
    # and update the state in its own dtype (functional.autocast_result_dtype).
    cpu_autocast_gemms_only: tuple = ()
    # torch.nn's message for input that is neither 2-D nor 3-D ({dim}: the input's); RNN's says
    # "tensor", LSTM's and GRU's do not
    input_dim_error: str = "{name}: Expected input to be 2D or 3D, got {dim}D instead"
    mode_kwargs: dict = field(default_factory=dict)  # mode -> extra keywords of `layer` / the fused op

    @property
    def has_c(self):
        return len(self.states) == 2

    @property
    def step(self):
        """The float64 reference's one step, reference.<name>_cell (looked up at each use, so a
        test may replace it): (x, *states, w_ih, w_hh, b_ih, b_hh[, w_hr]) -> new state(s)."""
        return getattr(reference, f"{self.name}_cell")

    @property
    def layer(self):
        """The reference's one layer and direction, reference.<name>_layer:
        (x, *states, *weights, reverse, lengths, **layer_kwargs(mode)) -> (out, *states)."""
        return getattr(reference, f"{self.name}_layer")

    @property
    def fused_directions(self):
        """Name of the fastrnn.fused op that runs all directions of one layer."""
        return f"{self.name}_directions"

    @property
    def cell_mode(self):
        return self.torch_name + "Cell"

    def layer_kwargs(self, mode):
        """Keywords the reference layer and the fused op take for `mode` (the Elman's nonlinearity)."""
        return self.mode_kwargs.get(mode, {})

    def hx(self, states):
        """A tuple of states -> the hx torch.nn takes and returns: h alone, or the tuple (h, c)."""
        return tuple(states) if self.has_c else states[0]

    def states_of(self, hx):
        """The inverse of `hx`: torch.nn's hx -> a tuple of states."""
        return tuple(hx) if self.has_c else (hx,)


ELMAN = CellSpec(
    name="elman", torch_name="RNN", modes={"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"},
    cell_vf="rnn_tanh_cell", gates=1, gate_order="(one gate)", states=("h",), folded_hh_gates=1,
    input_dim_error="{name}: Expected input to be 2D or 3D, got {dim}D tensor instead",
    mode_kwargs={"RNN_TANH": {"nonlinearity": "tanh"}, "RNN_RELU": {"nonlinearity": "relu"}})
LSTM = CellSpec(
    name="lstm", torch_name="LSTM", modes={"LSTM": "lstm"}, cell_vf="lstm_cell", gates=4,
    gate_order="i|f|g|o", states=("h", "c"), projects=True, folded_hh_gates=4, cpu_autocast_gemms_only=("cell",))
GRU = CellSpec(
    name="gru", torch_name="GRU", modes={"GRU": "gru"}, cell_vf="gru_cell", gates=3,
    gate_order="r|z|n", states=("h",), folded_hh_gates=2, cpu_autocast_gemms_only=("layer", "cell"))

CELLS = (ELMAN, LSTM, GRU)
_BY_MODE = {key: spec for spec in CELLS for key in (*spec.modes, spec.torch_name, spec.cell_mode)}


def of(mode):
    """The CellSpec of a torch.nn mode ('RNN_TANH', 'LSTM', 'GRU', ...) or class name ('RNN', 'GRUCell')."""
    try:
        return _BY_MODE[mode]
    except KeyError:
        raise ValueError(f"mode must be one of {tuple(_BY_MODE)}, got {mode!r}") from None


def vf(name):
    """torch._VF's function `name` (looked up by the caller once: torch._VF resolves names through a
    Python __getattr__ on every access)."""
    return getattr(torch._VF, name)
