"""The configurations the oracle's battery runs: one `Case` per module configuration and input form.

Shapes stay tiny (T <= 6, B <= 3, H <= 7) so that a whole battery runs in seconds on the float64
reference, yet every feature that changes the data path appears at least once: both Elman
nonlinearities, bias or not, projections, two layers, both directions, batch_first, unbatched input,
PackedSequence with unsorted lengths, a given or default hx, T = 1, B = 1, dropout in eval mode.
"""
from dataclasses import dataclass, replace

__all__ = ["Case", "default_cases", "select_cases"]


@dataclass(frozen=True)
class Case:
    """One module configuration plus one way of calling it.

    form: 'batched' (x: [T, B, I], or [B, T, I] with batch_first), 'unbatched' (x: [T, I]) or
    'packed' (a PackedSequence built with enforce_sorted=False from unsorted lengths).
    hx: pass random initial states (h0: [L*D, B, R], c0: [L*D, B, H]) instead of the default zeros.
    dropout: the module's dropout; the battery runs such a case in eval mode, where it must be off.
    """
    mode: str                  # 'RNN_TANH', 'RNN_RELU' or 'LSTM'
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
    def is_lstm(self):
        return self.mode == "LSTM"

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

    def module_kwargs(self):
        """Keyword arguments for torch.nn.RNN / torch.nn.LSTM (after input_size, hidden_size)."""
        kwargs = dict(num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                      dropout=self.dropout, bidirectional=self.bidirectional)
        if self.is_lstm:
            if self.proj_size:
                kwargs["proj_size"] = self.proj_size
        else:
            kwargs["nonlinearity"] = "relu" if self.mode == "RNN_RELU" else "tanh"
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
    if mode == "LSTM":
        out += [
            (replace(base, proj_size=3, num_layers=2, bidirectional=True, hx=True), True),
            (replace(base, proj_size=3, form="packed", bias=False, hx=True), False),
        ]
    return out


def default_cases(kind, quick=False):
    """The battery for kind 'RNN' (tanh and relu) or 'LSTM'; `quick` keeps about half of it."""
    modes = ("LSTM",) if kind == "LSTM" else ("RNN_TANH", "RNN_RELU")
    return [case for mode in modes for case, in_quick in _variants(mode) if in_quick or not quick]


def select_cases(kind, cases=None, quick=False):
    """Resolve the `cases` argument of check_module: None (the default battery), a list of Case,
    or a substring / list of substrings that case ids must contain."""
    if cases is None:
        return default_cases(kind, quick)
    if isinstance(cases, str):
        cases = [cases]
    cases = list(cases)
    if all(isinstance(c, Case) for c in cases):
        return cases
    if all(isinstance(c, str) for c in cases):
        chosen = [c for c in default_cases(kind, quick) if any(s in c.id for s in cases)]
        if not chosen:
            raise ValueError(f"no {kind} case id contains any of {cases}")
        return chosen
    raise TypeError("cases must be None, a list of Case, or a string / list of strings")
