"""The oracle itself: check_module passes correct modules and catches each deliberately broken one."""
import functools
from unittest import mock

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import fastrnn
from fastrnn import cellspec, reference
from fastrnn.testing import Case, assert_rnn_close, check_module, default_cases
from fastrnn.testing.plugin import rnn_oracle  # noqa: F401  (the fixture, without the entry point)

from module_cases import gru_cell_bhn_outside_reset

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _dtype_id(dtype):
    return {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]


# ---------------------------------------------------------------------------------------------
# Correct modules pass.

@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("factory", [nn.RNN, nn.LSTM, nn.GRU], ids=["RNN", "LSTM", "GRU"])
def test_torch_nn_passes(factory, dtype):
    report = check_module(factory, dtype=dtype)
    assert report.passed and len(report.results) == len(default_cases(report.kind))
    assert all(r.max_abs < 0.1 for r in report.results)


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_fastrnn_backend_passes(cls, backend):
    """Every module backend of the suite (conftest.MODULE_BACKENDS); triton runs fp32 only."""
    dtype = torch.float32 if backend == "triton" else torch.float64
    # The interpreter is slow: triton runs the quick half of the battery here (all of it on a GPU).
    report = check_module(functools.partial(getattr(fastrnn, cls), backend=backend), dtype=dtype,
                          quick=backend == "triton")
    assert report.passed and report.kind == cls


def test_report_has_errors_per_case_and_a_table():
    report = check_module(nn.LSTM, quick=True)
    assert report.kind == "LSTM" and 0 < len(report.results) < len(default_cases("LSTM"))
    for r in report.results:
        assert r.passed and 0 <= r.max_abs < 1e-12 and 0 <= r.max_rel < 1e-12
        names = {t.name.split(" (")[0] for t in r.tensors}  # a packed output is named 'output (Packed...'
        assert {"output", "h_n", "c_n", "grad x", "grad weight_hh_l0"} <= names
    table = report.table()
    assert "LSTM-T5-B3-H7-L2-bi-hx" in table and "PASS" in table and "FAIL" not in table


def test_cases_by_substring_and_explicit():
    report = check_module(nn.RNN, cases="packed")
    assert report.results and all("packed" in r.case_id for r in report.results)
    report = check_module(nn.LSTM, cases=[Case("LSTM", T=2, B=2, hidden_size=3, bidirectional=True)])
    assert [r.case_id for r in report.results] == ["LSTM-T2-B2-H3-L1-bi"]
    with pytest.raises(ValueError, match="do not fit"):
        check_module(nn.RNN, cases=[Case("LSTM")])


def test_fixture_is_check_module(rnn_oracle):  # noqa: F811
    assert rnn_oracle(nn.RNN, quick=True).passed


# ---------------------------------------------------------------------------------------------
# Deliberately broken modules. Each is torch.nn's module with one realistic bug.

class _Reparametrized:
    """Mixin: forward runs torch's forward on tampered parameters (gradients still reach the real
    ones), through functional_call; `_inside` stops functional_call from re-entering our forward."""
    _inside = False

    def tamper(self, name, p):
        return p

    def forward(self, input, hx=None):
        if self._inside:
            return super().forward(input, hx)
        params = {n: self.tamper(n, p) for n, p in self.named_parameters()}
        self._inside = True
        try:
            return functional_call(self, params, (input, hx))
        finally:
            self._inside = False


class _SwapsFirstTwoGates(_Reparametrized):
    """Gate rows read with the first two gates swapped."""
    def tamper(self, name, p):
        if name.startswith(("weight_ih", "weight_hh", "bias")):
            first, second, *rest = p.chunk(cellspec.of(self.mode).gates, 0)
            return torch.cat([second, first, *rest])
        return p


class SwappedGatesLSTM(_SwapsFirstTwoGates, nn.LSTM):
    """Gate rows read as f|i|g|o instead of i|f|g|o."""


class SwappedGatesGRU(_SwapsFirstTwoGates, nn.GRU):
    """Gate rows read as z|r|n instead of r|z|n."""


class MissingBiasLSTM(_Reparametrized, nn.LSTM):
    """Forgets bias_hh on every layer."""
    def tamper(self, name, p):
        return p * 0 if name.startswith("bias_hh") else p


class MissingBhnGRU(_Reparametrized, nn.GRU):
    """Forgets b_hn, the part of bias_hh that cannot be folded into the input GEMM."""
    def tamper(self, name, p):
        if name.startswith("bias_hh"):
            b_hr, b_hz, b_hn = p.chunk(3)
            return torch.cat([b_hr, b_hz, b_hn * 0])
        return p


class BhnOutsideResetGRU(fastrnn.GRU):
    """fastrnn's reference GRU with b_hn outside the reset product (tests/module_cases.py)."""
    def __init__(self, *args, **kwargs):
        super().__init__(*args, backend="reference", **kwargs)

    def forward(self, input, hx=None):
        with mock.patch.object(reference, "gru_cell", gru_cell_bhn_outside_reset):
            return super().forward(input, hx)


class IgnoresNonlinearityRNN(nn.RNN):
    """Always tanh, whatever nonlinearity was asked for."""
    def __init__(self, *args, nonlinearity="tanh", **kwargs):
        super().__init__(*args, **kwargs)


class _ReverseNotFlippedBack:
    """The reverse direction's outputs are left in reverse time order (h_n is right)."""
    def forward(self, input, hx=None):
        out, hidden = super().forward(input, hx)
        if self.bidirectional and isinstance(out, torch.Tensor):
            time_dim = 1 if (self.batch_first and out.dim() == 3) else 0
            R = out.shape[-1] // 2
            out = torch.cat([out[..., :R], out[..., R:].flip(time_dim)], dim=-1)
        return out, hidden


class ReverseNotFlippedBackLSTM(_ReverseNotFlippedBack, nn.LSTM):
    pass


class ReverseNotFlippedBackGRU(_ReverseNotFlippedBack, nn.GRU):
    pass


class DropoutInEvalLSTM(nn.LSTM):
    """Inter-layer dropout that ignores eval mode."""
    def forward(self, input, hx=None):
        was_training = self.training
        self.train(True)
        try:
            return super().forward(input, hx)
        finally:
            self.train(was_training)


class _WrongGrad(torch.autograd.Function):
    """Identity forward; backward off by 0.1%."""
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.001


class SlightlyWrongBackwardRNN(nn.RNN):
    def forward(self, input, hx=None):
        if isinstance(input, torch.Tensor):
            input = _WrongGrad.apply(input)
        return super().forward(input, hx)


class LayerMajorHnBugLSTM(nn.LSTM):
    """h_n / c_n stacked direction-major ([D, L] order) instead of torch's layer-major."""
    def forward(self, input, hx=None):
        out, (h, c) = super().forward(input, hx)
        if self.bidirectional and self.num_layers > 1:
            D, L = 2, self.num_layers
            reorder = lambda s: s.unflatten(0, (L, D)).transpose(0, 1).flatten(0, 1)
            h, c = reorder(h), reorder(c)
        return out, (h, c)


class PaddedInsteadOfPackedRNN(nn.RNN):
    """Runs a PackedSequence as if it were padded: lengths ignored, so h_n and the reverse
    direction read the padding."""
    def forward(self, input, hx=None):
        if not isinstance(input, PackedSequence):
            return super().forward(input, hx)
        padded, lengths = pad_packed_sequence(input, batch_first=self.batch_first)
        out, h = super().forward(padded, hx)
        return pack_padded_sequence(out, lengths, batch_first=self.batch_first, enforce_sorted=False), h


class SortedOrderHnLSTM(nn.LSTM):
    """For packed input, returns h_n / c_n in length-sorted order instead of the caller's order."""
    def forward(self, input, hx=None):
        out, (h, c) = super().forward(input, hx)
        if isinstance(input, PackedSequence):
            h, c = h[:, input.sorted_indices], c[:, input.sorted_indices]
        return out, (h, c)


class IgnoresHxRNN(nn.RNN):
    """Always starts from zeros."""
    def forward(self, input, hx=None):
        return super().forward(input, None)


class NoProjectionGradLSTM(nn.LSTM):
    """The projection's gradient is dropped (weight_hr detached)."""
    def forward(self, input, hx=None):
        if not self.proj_size:
            return super().forward(input, hx)
        params = {n: (p.detach() if n.startswith("weight_hr") else p) for n, p in self.named_parameters()}
        return functional_call(nn.LSTM(self.input_size, self.hidden_size, self.num_layers, self.bias,
                                       self.batch_first, self.dropout, self.bidirectional, self.proj_size),
                               params, (input, hx))


BROKEN = [
    # (module, what must be named in the AssertionError, a case id that must fail)
    (SwappedGatesLSTM, "output", "LSTM-T5-B3-H7-L1:"),
    (MissingBiasLSTM, "output", "LSTM-T5-B3-H7-L1:"),
    (IgnoresNonlinearityRNN, "output", "RNN_RELU-T5-B3-H7-L1:"),
    (ReverseNotFlippedBackLSTM, "output", "LSTM-T5-B3-H7-L2-bi-hx:"),
    (DropoutInEvalLSTM, "output", "LSTM-T5-B3-H7-L2-drop0.5-eval:"),
    (SlightlyWrongBackwardRNN, "grad x", "RNN_TANH-T5-B3-H7-L1:"),
    (LayerMajorHnBugLSTM, "h_n", "LSTM-T5-B3-H7-L2-bi-hx:"),
    (PaddedInsteadOfPackedRNN, "h_n", "RNN_TANH-T5-B3-H7-L1-bi-packed-hx:"),
    (SortedOrderHnLSTM, "h_n", "LSTM-T5-B3-H7-L1-bi-packed-hx:"),
    (IgnoresHxRNN, "output", "RNN_TANH-T5-B3-H7-L2-bi-hx:"),
    (NoProjectionGradLSTM, "grad weight_hr_l0", "LSTM-T5-B3-H7-L2-bi-P3-hx:"),
    (SwappedGatesGRU, "output", "GRU-T5-B3-H7-L1:"),
    (MissingBhnGRU, "output", "GRU-T5-B3-H7-L1:"),
    (BhnOutsideResetGRU, "output", "GRU-T5-B3-H7-L1:"),
    (ReverseNotFlippedBackGRU, "output", "GRU-T5-B3-H7-L2-bi-hx:"),
]


@pytest.mark.parametrize("broken, names, case_id", BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_broken_module_fails(broken, names, case_id):
    with pytest.raises(AssertionError) as info:
        check_module(broken, quick=True)
    message = str(info.value)
    assert case_id in message and names in message, message


@pytest.mark.parametrize("broken", [SwappedGatesLSTM, MissingBiasLSTM, DropoutInEvalLSTM, SwappedGatesGRU,
                                    MissingBhnGRU, BhnOutsideResetGRU], ids=lambda b: b.__name__)
def test_broken_module_fails_in_low_precision(broken):
    """The fp32/bf16 tolerances stay far below a real bug's error."""
    for dtype in (torch.float32, torch.bfloat16):
        report = check_module(broken, dtype=dtype, quick=True, raise_on_failure=False)
        assert not report.passed and "FAIL" in report.table()


def test_module_that_raises_fails_with_reason():
    class Crashes(nn.LSTM):
        def forward(self, input, hx=None):
            raise RuntimeError("kernel launch failed")

    report = check_module(Crashes, quick=True, raise_on_failure=False)
    assert not report.passed
    assert all("RuntimeError: kernel launch failed" in r.failures[0] for r in report.results)


# ---------------------------------------------------------------------------------------------
# assert_rnn_close

def _lstm_result(seed=0, packed=False):
    torch.manual_seed(seed)
    lstm = nn.LSTM(3, 4, bidirectional=True).double()
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([2, 5, 1]), enforce_sorted=False)
    return lstm(x)


def test_assert_rnn_close_names_the_part():
    out, (h, c) = _lstm_result()
    assert_rnn_close((out, (h, c)), (out.clone(), (h.clone(), c.clone())))
    c_bad = c.clone()
    c_bad[1, 2, 3] += 1e-3
    with pytest.raises(AssertionError, match=r"^c_n: 1/24 elements differ.*first at index \[1, 2, 3\]"):
        assert_rnn_close((out, (h, c_bad)), (out, (h, c)))
    with pytest.raises(AssertionError, match=r"^output: shape"):
        assert_rnn_close(out[:-1], out)
    with pytest.raises(AssertionError, match=r"^h_n: non-finite"):
        assert_rnn_close((out, h * float("nan")), (out, h))
    with pytest.raises(AssertionError, match=r"^grads\[1\]: "):
        assert_rnn_close((h, c_bad), (h, c), name="grads")


def test_assert_rnn_close_packed_reports_time_and_sequence():
    out, (h, c) = _lstm_result(packed=True)
    assert_rnn_close(out, out)
    data = out.data.clone()
    # lengths [2, 5, 1]: batch_sizes [3, 2, 1, 1, 1], so packed row 4 is step 1 of the second
    # longest sequence, which is sequence 0 in the caller's order.
    data[4, 0] += 1.0
    bad = PackedSequence(data, out.batch_sizes, out.sorted_indices, out.unsorted_indices)
    t, b = 1, 0
    with pytest.raises(AssertionError, match=rf"^output \(PackedSequence.*first at index \[{t}, {b}, 0\]"):
        assert_rnn_close((bad, (h, c)), (out, (h, c)))
    other = _lstm_result(packed=False)[0]
    with pytest.raises(AssertionError, match="actual is PackedSequence, expected Tensor"):
        assert_rnn_close(out, other)
    shorter = pack_padded_sequence(torch.zeros(5, 3, 8, dtype=torch.float64), torch.tensor([2, 4, 1]),
                                   enforce_sorted=False)
    with pytest.raises(AssertionError, match=r"output\.batch_sizes"):
        assert_rnn_close(shorter, out)


def test_assert_rnn_close_tolerances_follow_dtype():
    out = _lstm_result()[0]
    noisy = out + 1e-6
    assert_rnn_close(noisy.float(), out, dtype=torch.float32, T=5)
    with pytest.raises(AssertionError):
        assert_rnn_close(noisy, out)  # float64 tolerances
    with pytest.raises(AssertionError):
        assert_rnn_close(out.float() + 1e-2, out, T=5)
