"""Tools for proving an RNN implementation equal to the float64 reference.

`check_module(factory)` runs the battery of configurations and input forms on anything built like
torch.nn.RNN / torch.nn.LSTM; `assert_rnn_close` compares whole RNN results (tensor, tuple,
PackedSequence); `assert_close` / `tolerances` compare one tensor. The pytest fixture `rnn_oracle`
lives in `fastrnn.testing.plugin`.
"""
from .battery import check_module, module_kind, run_case
from .cases import Case, default_cases
from .compare import assert_close, tolerances
from .outputs import assert_rnn_close
from .report import CaseResult, Report

__all__ = ["assert_close", "tolerances", "assert_rnn_close", "check_module", "module_kind", "run_case",
           "Case", "default_cases", "CaseResult", "Report"]
