"""The one registry of benchmark shapes, shared by `python -m fastrnn bench` and `benchmarks/`.

A case is one (cell, shape, layout, dtype, mode) point; its id reads like
`lstm-T64-B16-H256-L1-uni-fp32-train` (plus `-packed` for a PackedSequence with varied lengths).
The full grid is the product T x B x H x layers x directions x dtypes x modes for every cell (the
Elman RNN with tanh, the LSTM, the GRU), plus packed cases and, on CUDA, the anchor cases; `quick`
is a 36-case subset (12 per cell) a 2-core CPU runs in about 20 seconds (on CUDA it adds bf16 and
the anchor cases). A case's `module_name`, `torch_mode` and `kernel_cell` say what it runs, from
the cell's description (fastrnn/cellspec.py).

Anchor (a): FlashRNN's published LSTM table is at B=16, H=768, T=1024. Its cases take I = H like
every other case, in fp16 and bf16, both modes, on CUDA only (`--cases H768` picks them): a T=1024,
H=768 case would dominate a CPU run, and torch's 16-bit CPU RNNs are no baseline.
"""
import itertools
from dataclasses import asdict, dataclass

import torch

from . import cellspec

CELLS = ("rnn", "lstm", "gru")    # rnn: the Elman RNN with tanh
_MODES = {"rnn": "RNN_TANH", "lstm": "LSTM", "gru": "GRU"}  # cell -> torch.nn's mode
SEQ_LENS = (1, 64, 512, 2048)
BATCHES = (1, 16, 64, 256)
HIDDENS = (64, 256, 1024)         # I = H everywhere
LAYERS = (1, 2)
MODES = ("infer", "train")        # infer: forward under no_grad; train: forward + backward
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GRID_DTYPES = ("fp32", "bf16")    # the grid's dtypes on CUDA (fp16 only in the anchor cases)


@dataclass(frozen=True)
class Case:
    """One benchmark point. I = H; `packed` feeds a PackedSequence whose lengths vary from T to T/4."""
    cell: str
    T: int
    B: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    dtype: str = "fp32"
    mode: str = "infer"
    packed: bool = False

    @property
    def id(self):
        tail = "-packed" if self.packed else ""
        return (f"{self.cell}-T{self.T}-B{self.B}-H{self.H}-L{self.layers}-"
                f"{'bi' if self.bidirectional else 'uni'}-{self.dtype}-{self.mode}{tail}")

    @property
    def torch_dtype(self):
        return DTYPES[self.dtype]

    @property
    def torch_mode(self):
        """torch.nn's mode of the case's cell ('RNN_TANH', 'LSTM', 'GRU'), as backends take it."""
        return _MODES[self.cell]

    @property
    def module_name(self):
        """The class torch.nn and fastrnn both name the cell by: 'RNN', 'LSTM' or 'GRU'."""
        return cellspec.of(self.torch_mode).torch_name

    @property
    def kernel_cell(self):
        """The cell's name in the kernels and fastrnn.fused: 'elman', 'lstm' or 'gru'."""
        return cellspec.of(self.torch_mode).name

    def lengths(self):
        """[B] int64 lengths: T for sequence 0, then evenly down to T/4 (None unless packed)."""
        if not self.packed:
            return None
        low = max(1, self.T // 4)
        return torch.linspace(self.T, low, self.B).round().to(torch.int64)

    def as_dict(self):
        return {"id": self.id, **asdict(self)}


def _packed_cases(dtypes):
    # Varied lengths on mid-size shapes: enough steps for packing to matter, both layouts.
    return [Case(cell, T, B, H, layers, bi, dt, mode, packed=True)
            for cell, T, B, H, (layers, bi), dt, mode in itertools.product(
                CELLS, (64, 512), (16, 64), (64, 256), ((1, False), (2, True)), dtypes, MODES)]


def anchor_cases(device="cuda"):
    """Anchor (a), FlashRNN's shape: LSTM T=1024, B=16, H=768 (I = H), fp16 and bf16, both modes;
    none on CPU (see the module docstring)."""
    if torch.device(device).type != "cuda":
        return []
    return [Case("lstm", 1024, 16, 768, 1, False, dt, mode)
            for dt, mode in itertools.product(("fp16", "bf16"), MODES)]


def full_grid(device="cuda"):
    """Every case of the issue's grid, then the anchor cases; bf16 only on CUDA (torch's CPU RNNs
    in bf16 are no baseline)."""
    dtypes = GRID_DTYPES if torch.device(device).type == "cuda" else ("fp32",)
    grid = [Case(cell, T, B, H, layers, bi, dt, mode)
            for cell, T, B, H, layers, bi, dt, mode in itertools.product(
                CELLS, SEQ_LENS, BATCHES, HIDDENS, LAYERS, (False, True), dtypes, MODES)]
    return grid + _packed_cases(dtypes) + anchor_cases(device)


def quick(device="cpu"):
    """A small subset: every cell, mode, layout and the packed case, at shapes a CPU runs fast; on
    CUDA also in bf16, plus the anchor cases."""
    dtypes = GRID_DTYPES if torch.device(device).type == "cuda" else ("fp32",)
    cases = []
    for cell, mode, dt in itertools.product(CELLS, MODES, dtypes):
        cases += [
            Case(cell, 1, 16, 256, 1, False, dt, mode),        # one step: call overhead
            Case(cell, 64, 1, 64, 1, False, dt, mode),         # tiny: latency-bound
            Case(cell, 64, 16, 256, 1, False, dt, mode),
            Case(cell, 512, 16, 64, 1, False, dt, mode),       # long and narrow
            Case(cell, 64, 16, 64, 2, True, dt, mode),         # stacked, bidirectional
            Case(cell, 64, 16, 64, 2, True, dt, mode, packed=True),
        ]
    return cases + anchor_cases(device)


def select(cases, pattern=None, max_cases=None):
    """Cases whose id contains every comma-separated part of `pattern`, at most `max_cases` of them."""
    if max_cases is not None and max_cases < 1:
        raise ValueError(f"max_cases must be at least 1 (or None for no cap), got {max_cases}")
    if pattern:
        parts = [p for p in pattern.split(",") if p]
        cases = [c for c in cases if all(p in c.id for p in parts)]
    return cases[:max_cases]
