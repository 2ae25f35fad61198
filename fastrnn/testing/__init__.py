"""Tools for proving an RNN implementation equal to the float64 reference.

`check_module(factory)` runs the battery of configurations and input forms on anything built like
torch.nn.RNN / LSTM / GRU; `assert_rnn_close` compares whole RNN results (tensor, tuple,
PackedSequence); `assert_close` / `tolerances` compare one tensor. The pytest fixture `rnn_oracle`
lives in `fastrnn.testing.plugin`.

The names load on first use (PEP 562), so importing this package (as loading the pytest plugin
does) imports neither torch nor the rest of fastrnn.
"""
from .. import _load

_MODULES = {
    "compare": ("assert_close", "tolerances"),
    "outputs": ("assert_rnn_close",),
    "battery": ("check_module", "module_kind", "run_case"),
    "cases": ("Case", "default_cases"),
    "report": ("CaseResult", "Report"),
}
# public name -> (submodule, attribute)
_EXPORTS = {name: (module, name) for module, names in _MODULES.items() for name in names}

__all__ = ["assert_close", "tolerances", "assert_rnn_close", "check_module", "module_kind", "run_case",
           "Case", "default_cases", "CaseResult", "Report"]


def __getattr__(name):
    return _load(globals(), _EXPORTS, name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
