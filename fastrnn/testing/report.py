"""What the oracle's battery returns: one `CaseResult` per case, gathered in a `Report`."""
import math
from dataclasses import dataclass, field

import torch

__all__ = ["TensorResult", "CaseResult", "Report", "errors"]


def errors(actual, expected):
    """(max abs error, max abs error / max |expected|) of two tensors, compared in float64.

    The relative error is normwise (against the largest expected value), so an element near zero
    does not blow it up. NaN/Inf in `actual` give inf.
    """
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    if a.numel() == 0:
        return 0.0, 0.0
    if not torch.isfinite(a).all():
        return math.inf, math.inf
    max_abs = (a - e).abs().max().item()
    return max_abs, max_abs / max(e.abs().max().item(), 1e-30)


@dataclass
class TensorResult:
    """One compared tensor of a case ('output', 'h_n', 'grad weight_hh_l0', ...)."""
    name: str
    max_abs: float
    max_rel: float
    passed: bool
    message: str = ""


@dataclass
class CaseResult:
    """One case: every compared tensor, plus the error if the case could not run at all."""
    case_id: str
    tensors: list = field(default_factory=list)
    error: str = ""

    @property
    def passed(self):
        """No error, and at least one tensor compared and every one equal: a case that compared
        nothing proves nothing."""
        return not self.error and bool(self.tensors) and all(t.passed for t in self.tensors)

    @property
    def max_abs(self):
        return max((t.max_abs for t in self.tensors), default=math.nan)

    @property
    def max_rel(self):
        return max((t.max_rel for t in self.tensors), default=math.nan)

    @property
    def failures(self):
        """Messages of everything that failed, first difference first."""
        if not self.error and not self.tensors:
            return ["nothing was compared"]
        return ([self.error] if self.error else []) + [t.message for t in self.tensors if not t.passed]


@dataclass
class Report:
    """The battery's result for one module factory on one dtype and device."""
    name: str
    kind: str
    dtype: torch.dtype
    device: str
    results: list = field(default_factory=list)

    @property
    def passed(self):
        """At least one case ran and every case passed: a battery that ran nothing proves nothing."""
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failed(self):
        return [r for r in self.results if not r.passed]

    @property
    def max_abs(self):
        return max((r.max_abs for r in self.results), default=math.nan)

    @property
    def max_rel(self):
        return max((r.max_rel for r in self.results), default=math.nan)

    def table(self):
        """One line per case: id, max abs error, max rel error, PASS/FAIL."""
        width = max([len(r.case_id) for r in self.results] + [4])
        lines = [f"{self.name} ({self.kind}, {str(self.dtype).replace('torch.', '')}, {self.device})",
                 f"  {'case':<{width}}  {'max abs':>9}  {'max rel':>9}  result"]
        for r in self.results:
            lines.append(f"  {r.case_id:<{width}}  {r.max_abs:9.2e}  {r.max_rel:9.2e}  "
                         f"{'PASS' if r.passed else 'FAIL'}")
        return "\n".join(lines)

    def failure_message(self):
        """The AssertionError text: how many cases failed and, per case, what differed."""
        where = f"({str(self.dtype).replace('torch.', '')}, {self.device})"
        if not self.results:
            return f"{self.name}: no case ran {where}, so nothing was checked"
        lines = [f"{self.name}: {len(self.failed)}/{len(self.results)} cases failed {where}"]
        # Cases that failed the same way (a backend that cannot run at all) are listed once.
        groups = {}
        for r in self.failed:
            groups.setdefault(tuple(r.failures), []).append(r.case_id)
        for failures, ids in groups.items():
            lines.append(f"  {ids[0]}:" if len(ids) == 1 else f"  {len(ids)} cases ({', '.join(ids)}):")
            lines += [f"    {msg}" for msg in failures]
        return "\n".join(lines)

    def __str__(self):
        return self.table()
