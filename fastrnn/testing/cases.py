"""The configurations the oracle's battery runs: one `Case` per module configuration and input form.

Shapes stay tiny (T <= 6, B <= 3, H <= 7) so that a whole battery runs in seconds on the float64
reference, yet every feature that changes the data path appears at least once: both Elman
nonlinearities, the LSTM, the GRU, bias or not, projections, two layers, both directions, batch_first, unbatched input,
PackedSequence with unsorted lengths, a given or default hx, T = 1, B = 1, dropout in eval mode.
"""
from dataclasses import dataclass, replace

from .. import cellspec

__all__ = ["Case", "default_cases", "select_cases", "check_kind"]

# kind (torch.nn's class name) -> the modes of its cases
KINDS = {cell.torch_name: tuple(cell.modes) for cell in cellspec.CELLS}
MODES = tuple(mode for modes in KINDS.values() for mode in modes)
FORMS = ("batched", "unbatched", "packed")


def check_kind(kind):
    """Raise ValueError unless `kind` is 'RNN', 'LSTM' or 'GRU' (the cells the battery knows)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be 'RNN', 'LSTM' or 'GRU' (the battery checks torch.nn.RNN, torch.nn.LSTM "
                         f"and torch.nn.GRU look-alikes), got {kind!r}")


@dataclass(frozen=True)
class Case:
    """One module configuration plus one way of calling it.

    form: 'batched' (x: [T, B, I], or [B, T, I] with batch_first), 'unbatched' (x: [T, I]) or
    'packed' (a PackedSequence built with enforce_sorted=False from unsorted lengths).
    hx: pass random initial states (h0: [L*D, B, R], c0: [L*D, B, H]) instead of the default zeros.
    dropout: the module's dropout; the battery runs such a case in eval mode, where it must be off.
    """
    mode: str                  # 'RNN_TANH', 'RNN_RELU', 'LSTM' or 'GRU'
    T: int = 5
    B: int = 3
    input_size: int = 4
    hidden_size: int = 7       # odd on purpose
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    bidirectional: bool = False
    proj_size: int = 0
    dropout: float = 0.0
    form: str = "batched"
    hx: bool = False

    @property
    def cell(self):
        """The CellSpec of the case's mode (fastrnn/cellspec.py)."""
        return cellspec.of(self.mode)

    @property
    def kind(self):
        """torch.nn's class of the case: 'RNN', 'LSTM' or 'GRU'."""
        return self.cell.torch_name


    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def out_size(self):
        """R: the size of h (proj_size when the LSTM projects, else hidden_size)."""
        return self.proj_size or self.hidden_size

    @property
    def id(self):
        """A readable id, e.g. 'LSTM-T5-B3-H7-L2-bi-P3-packed-hx'."""
        parts = [self.mode, f"T{self.T}", f"B{self.B}", f"H{self.hidden_size}", f"L{self.num_layers}"]
        parts += ["bi"] if self.bidirectional else []
        parts += [f"P{self.proj_size}"] if self.proj_size else []
        parts += ["nobias"] if not self.bias else []
        parts += ["bf"] if self.batch_first else []
        parts += [f"drop{self.dropout:g}-eval"] if self.dropout else []
        parts += [self.form] if self.form != "batched" else []
        parts += ["hx"] if self.hx else []
        return "-".join(parts)

    def __post_init__(self):
        """A case the battery cannot run as its id says is a ValueError here, not a confusing
        failure (or a silent pass) later."""
        if self.mode not in MODES:
            raise ValueError(f"Case mode must be one of {MODES}, got {self.mode!r}")
        if self.form not in FORMS:
            raise ValueError(f"Case form must be one of {FORMS}, got {self.form!r}")
        for field in ("T", "B", "input_size", "hidden_size", "num_layers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Case {field} must be an int >= 1, got {value!r}")
        if self.form == "unbatched" and self.B != 1:
            raise ValueError(f"an unbatched Case has one sequence: B must be 1, got {self.B}")
        if isinstance(self.proj_size, bool) or not isinstance(self.proj_size, int) or self.proj_size < 0:
            raise ValueError(f"Case proj_size must be an int >= 0, got {self.proj_size!r}")
        if self.proj_size and not (self.cell.projects and self.proj_size < self.hidden_size):
            raise ValueError(f"proj_size={self.proj_size} needs mode 'LSTM' and proj_size < hidden_size "
                             f"({self.hidden_size}), as in torch.nn.LSTM")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0 <= self.dropout <= 1:
            raise ValueError(f"Case dropout must be a number in [0, 1], got {self.dropout!r}")
        for field in ("bias", "batch_first", "bidirectional", "hx"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"Case {field} must be True or False, got {getattr(self, field)!r}")

    def module_kwargs(self):
        """Keyword arguments for torch.nn.RNN / LSTM / GRU (after input_size, hidden_size)."""
        kwargs = dict(num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                      dropout=self.dropout, bidirectional=self.bidirectional,
                      **self.cell.layer_kwargs(self.mode))  # the Elman RNN's nonlinearity
        if self.proj_size:
            kwargs["proj_size"] = self.proj_size
        return kwargs


def _variants(mode):
    """(case, in_quick) pairs for one mode."""
    base = Case(mode)
    out = [
        (base, True),
        (replace(base, bias=False, hx=True), False),
        (replace(base, num_layers=2, bidirectional=True, hx=True), True),
        (replace(base, batch_first=True, hx=True), False),
        (replace(base, B=1, form="unbatched", hx=True), True),
        (replace(base, B=1, form="unbatched", num_layers=2, bidirectional=True), False),
        (replace(base, form="packed", bidirectional=True, hx=True), True),
        (replace(base, form="packed", num_layers=2, batch_first=True), False),
        (replace(base, T=1, B=1, hx=True), True),
        (replace(base, T=6, B=1, num_layers=2, bidirectional=True, form="packed"), False),
        (replace(base, num_layers=2, dropout=0.5), True),
    ]
    if cellspec.of(mode).projects:
        out += [
            (replace(base, proj_size=3, num_layers=2, bidirectional=True, hx=True), True),
            (replace(base, proj_size=3, form="packed", bias=False, hx=True), False),
        ]
    return out


def default_cases(kind, quick=False):
    """The battery for kind 'RNN' (tanh and relu), 'LSTM' or 'GRU'; `quick` keeps about half of it."""
    check_kind(kind)
    return [case for mode in KINDS[kind] for case, in_quick in _variants(mode) if in_quick or not quick]


_ACCEPTED = ("cases must be None (the whole battery), a Case, a substring of case ids ('packed', "
             "'LSTM-T1'), or a non-empty list of those")


def select_cases(kind, cases=None, quick=False):
    """Resolve the `cases` argument of check_module: None (the default battery), a Case, a
    substring that case ids must contain, or a list mixing those. Raises ValueError for a
    selection that is empty or has a substring no case id contains (a check that runs nothing
    must not pass), TypeError for anything else."""
    check_kind(kind)
    if cases is None:
        return default_cases(kind, quick)
    if isinstance(cases, (str, Case)):
        cases = [cases]
    elif isinstance(cases, (list, tuple)):
        cases = list(cases)
    else:
        raise TypeError(f"{_ACCEPTED}; got {type(cases).__name__} {cases!r}")
    if not cases:
        raise ValueError(f"cases is empty, so the check would run nothing; {_ACCEPTED}")
    strange = [c for c in cases if not isinstance(c, (str, Case))]
    if strange:
        raise TypeError(f"{_ACCEPTED}; got {type(strange[0]).__name__} {strange[0]!r} in the list")
    if "" in cases:
        raise ValueError(f"an empty substring matches every case id; {_ACCEPTED}")
    battery = default_cases(kind, quick)
    chosen, unmatched = [], []
    for c in cases:
        found = [c] if isinstance(c, Case) else [b for b in battery if c in b.id]
        if not found:
            unmatched.append(c)
        chosen += [f for f in found if f not in chosen]
    if unmatched:
        which = "the quick battery's" if quick else "the battery's"
        raise ValueError(f"no {kind} case id of {which} contains {unmatched!r}; ids look like "
                         f"{battery[-1].id!r} (see default_cases({kind!r}))")
    return chosen
