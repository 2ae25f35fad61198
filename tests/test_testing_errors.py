"""check_module under hostile use: every argument it cannot use is one clear TypeError / ValueError
that says what was wrong and what is accepted, and a check that ran nothing never passes."""
import math

import pytest
import torch
from torch import nn

from fastrnn.testing import Case, CaseResult, Report, assert_close, assert_rnn_close, check_module, run_case, tolerances
from fastrnn.testing.cases import select_cases

T1 = "T1-B1"  # one tiny case per mode keeps these fast


class _Returns(nn.LSTM):
    """torch.nn.LSTM whose forward hands its result to `reshape` first."""
    reshape = staticmethod(lambda result: result)

    def forward(self, input, hx=None):
        return type(self).reshape(super().forward(input, hx))


def _returning(reshape):
    return type("Returns", (_Returns,), {"reshape": staticmethod(reshape)})


class _OtherMode(nn.RNN):
    """A module that says it runs a recurrence the battery does not know."""
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = "MGU"


BAD_ARGUMENTS = [
    # (id, factory, check_module kwargs, exception, what the message must say)
    ("cases-empty-list", nn.RNN, dict(cases=[]), ValueError, r"cases is empty.*must be None"),
    ("cases-empty-tuple", nn.RNN, dict(cases=()), ValueError, r"cases is empty"),
    ("cases-empty-substring", nn.RNN, dict(cases=""), ValueError, r"empty substring matches every case"),
    ("cases-int", nn.RNN, dict(cases=3), TypeError, r"cases must be None.*a Case.*got int 3"),
    ("cases-list-of-int", nn.RNN, dict(cases=["packed", 3]), TypeError, r"got int 3 in the list"),
    ("cases-no-match", nn.RNN, dict(cases=["packed", "nosuchcase"]), ValueError,
     r"contains \['nosuchcase'\]; ids look like"),
    ("cases-wrong-cell", nn.RNN, dict(cases=[Case("LSTM")]), ValueError, r"do not fit a RNN factory"),
    ("dtype-str", nn.RNN, dict(dtype="float32"), TypeError,
     r"dtype must be a torch.dtype \(one of float64, float32, float16, bfloat16\), got 'float32'"),
    ("dtype-int32", nn.RNN, dict(dtype=torch.int32), ValueError, r"no tolerances for torch.int32.*float64"),
    ("dtype-complex", nn.LSTM, dict(dtype=torch.complex64), ValueError, r"no tolerances for torch.complex64"),
    ("device-gpu", nn.RNN, dict(device="gpu"), ValueError, r"device 'gpu' is not a torch device \('cpu', 'cuda'"),
    ("device-float", nn.RNN, dict(device=3.5), TypeError, r"device must be a str or torch.device.*got 3.5"),
    ("device-meta", nn.RNN, dict(device="meta"), ValueError, r"'meta' holds no values"),
    ("kind-MGU", nn.RNN, dict(kind="MGU"), ValueError, r"kind must be 'RNN', 'LSTM' or 'GRU'.*got 'MGU'"),
    ("kind-lowercase", nn.LSTM, dict(kind="lstm"), ValueError, r"kind must be 'RNN', 'LSTM' or 'GRU'.*got 'lstm'"),
    ("kind-disagrees", nn.RNN, dict(kind="LSTM"), ValueError, r"kind='LSTM', but RNN builds an RNN"),
    ("kind-disagrees-GRU", nn.GRU, dict(kind="RNN"), ValueError, r"kind='RNN', but GRU builds a GRU"),
    ("factory-other-mode", _OtherMode, dict(), ValueError,
     r"builds a _OtherMode with mode 'MGU'; check_module checks the Elman RNN.*the LSTM.*and the GRU"),
    ("factory-not-callable", 3, dict(), TypeError, r"needs a factory called like torch.nn.RNN.*got int 3"),
    ("factory-returns-None", lambda *a, **k: None, dict(kind="RNN"), TypeError,
     r"returned NoneType, not a torch.nn.Module; check_module needs a factory called like"),
    ("factory-returns-tensor", lambda *a, **k: torch.zeros(3), dict(), TypeError,
     r"returned Tensor, not a torch.nn.Module"),
    ("factory-unknown-module", lambda i, h, **k: nn.Linear(i, h), dict(), TypeError,
     r"cannot tell whether .* builds an RNN, an LSTM or a GRU.*pass kind='RNN', 'LSTM' or 'GRU'"),
    ("atol-negative", nn.RNN, dict(atol=-1.0), ValueError, r"atol must be a finite number >= 0.*got -1.0"),
    ("rtol-inf", nn.RNN, dict(rtol=math.inf), ValueError, r"rtol must be a finite number >= 0.*got inf"),
    ("atol-nan", nn.RNN, dict(atol=math.nan), ValueError, r"atol must be a finite number >= 0"),
    ("atol-str", nn.RNN, dict(atol="1e-3"), TypeError, r"atol must be a number >= 0.*got '1e-3'"),
    ("seed-str", nn.RNN, dict(seed="0"), TypeError, r"seed must be an int, got '0'"),
    ("quick-str", nn.RNN, dict(quick="no"), TypeError, r"quick must be True or False, got 'no'"),
    ("raise_on_failure-none", nn.RNN, dict(raise_on_failure=None), TypeError, r"raise_on_failure must be True"),
    ("name-int", nn.RNN, dict(name=3), TypeError, r"name must be a str or None, got 3"),
    # forward results that are not torch.nn's (output, h_n) / (output, (h_n, c_n))
    ("forward-tensor", _returning(lambda r: r[0]), dict(cases=T1), TypeError,
     r"forward returned Tensor in case LSTM-T1.*accepts torch.nn's result form: a tuple \(output, \(h_n, c_n\)\)"),
    ("forward-list", _returning(list), dict(cases=T1), TypeError, r"forward returned list of 2 in case"),
    ("forward-dict", _returning(lambda r: {"out": r[0]}), dict(cases=T1), TypeError, r"forward returned dict"),
    ("forward-None", _returning(lambda r: None), dict(cases=T1), TypeError, r"forward returned NoneType"),
    ("forward-h-only", _returning(lambda r: (r[0], r[1][0])), dict(cases=T1), TypeError,
     r"returned a hidden state of type Tensor \(expected a tuple \(h_n, c_n\) of tensors\)"),
    ("forward-numpy", _returning(lambda r: (r[0].detach().numpy(), r[1])), dict(cases=T1), TypeError,
     r"returned an output of type ndarray \(expected Tensor\)"),
    ("forward-padded-for-packed", _returning(lambda r: (nn.utils.rnn.pad_packed_sequence(r[0])[0], r[1])
                                             if isinstance(r[0], nn.utils.rnn.PackedSequence) else r),
     dict(cases="L1-bi-packed"), TypeError,
     r"output of type Tensor \(expected PackedSequence\) in case LSTM-.*-packed"),
]


@pytest.mark.parametrize("factory, kwargs, error, message", [b[1:] for b in BAD_ARGUMENTS],
                         ids=[b[0] for b in BAD_ARGUMENTS])
def test_bad_argument_is_one_clear_error(factory, kwargs, error, message):
    with pytest.raises(error, match=message):
        check_module(factory, **{"cases": T1, **kwargs})


def test_cases_mix_case_objects_and_substrings():
    report = check_module(nn.RNN, cases=[Case("RNN_TANH", T=2, B=2, hidden_size=3), "RNN_RELU-T1", "RNN_RELU-T1"])
    assert [r.case_id for r in report.results] == ["RNN_TANH-T2-B2-H3-L1", "RNN_RELU-T1-B1-H7-L1-hx"]
    assert check_module(nn.LSTM, cases=Case("LSTM", T=1, B=1, hidden_size=2)).passed  # a lone Case


def test_a_substring_only_outside_the_quick_battery_says_so():
    with pytest.raises(ValueError, match="no RNN case id of the quick battery's contains"):
        select_cases("RNN", "nobias", quick=True)
    assert select_cases("RNN", "nobias")


def test_nothing_checked_never_passes():
    """A report without cases, and a case that compared no tensor, are failures, not passes."""
    empty = Report("m", "LSTM", torch.float32, "cpu")
    assert not empty.passed and "no case ran" in empty.failure_message()
    case = CaseResult("LSTM-T1")
    assert not case.passed and case.failures == ["nothing was compared"]
    empty.results.append(case)
    assert not empty.passed and "nothing was compared" in empty.failure_message()


def test_result_in_another_dtype_fails_the_case():
    """The module runs in float64 but hands back float32: a bug, reported per case."""
    wrong_dtype = _returning(lambda r: (r[0].float(), r[1]))
    report = check_module(wrong_dtype, cases=T1, raise_on_failure=False)
    assert not report.passed
    assert "output: torch.float32 on cpu, expected torch.float64 on cpu" in report.failure_message()


def test_factory_that_fails_for_a_case_fails_that_case_and_says_where():
    class NoBidirectional(nn.LSTM):
        def __init__(self, *args, bidirectional=False, **kwargs):
            if bidirectional:
                raise ValueError("no bidirectional here")
            super().__init__(*args, **kwargs)

    report = check_module(NoBidirectional, cases=[Case("LSTM", T=2), "L2-bi-hx"], raise_on_failure=False)
    assert [r.passed for r in report.results] == [True, False]
    assert report.results[1].error == "building the module raised ValueError: no bidirectional here"


def test_run_case_checks_its_arguments_too():
    case = Case("RNN_TANH", T=1, B=1)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        run_case(nn.RNN, case, dtype="float64")
    with pytest.raises(TypeError, match="returned NoneType, not a torch.nn.Module"):
        run_case(lambda *a, **k: None, case)
    assert run_case(nn.RNN, case).passed


BAD_CASES = [
    (dict(mode="MGU"), r"mode must be one of \('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU'\), got 'MGU'"),
    (dict(mode="GRU", proj_size=3), r"proj_size=3 needs mode 'LSTM'"),
    (dict(mode="LSTM", form="pakced"), r"form must be one of \('batched', 'unbatched', 'packed'\)"),
    (dict(mode="LSTM", T=0), r"T must be an int >= 1, got 0"),
    (dict(mode="LSTM", hidden_size=2.5), r"hidden_size must be an int >= 1, got 2.5"),
    (dict(mode="LSTM", form="unbatched"), r"unbatched Case has one sequence: B must be 1, got 3"),
    (dict(mode="RNN_TANH", proj_size=3), r"proj_size=3 needs mode 'LSTM'"),
    (dict(mode="LSTM", proj_size=7), r"proj_size < hidden_size \(7\)"),
    (dict(mode="LSTM", dropout=1.5), r"dropout must be a number in \[0, 1\], got 1.5"),
    (dict(mode="LSTM", bidirectional="yes"), r"bidirectional must be True or False, got 'yes'"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CASES, ids=[m[:30] for _, m in BAD_CASES])
def test_a_case_that_cannot_run_as_its_id_says_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Case(**kwargs)


def test_tolerances_and_assert_close_check_their_arguments():
    with pytest.raises(ValueError, match="no tolerances for torch.int64.*pass atol and rtol explicitly"):
        assert_close(torch.arange(3), torch.arange(3))
    assert_close(torch.arange(3), torch.arange(3), atol=0, rtol=0)  # explicit tolerances: any dtype
    with pytest.raises(TypeError, match="T .* must be an integer, got 2.5"):
        tolerances(torch.float32, 2.5)
    with pytest.raises(ValueError, match="T .* must be >= 0, got -1"):
        tolerances(torch.float32, -1)
    with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
        assert_close(torch.zeros(2), torch.zeros(2), atol=-1e-3)
    assert tolerances(torch.float32, torch.tensor(4)) == tolerances(torch.float32, 4)


@pytest.mark.parametrize("nothing", [(), [], None, (None, (None, None))], ids=repr)
def test_assert_rnn_close_that_compares_nothing_is_an_error(nothing):
    with pytest.raises(ValueError, match="no tensor on either side, so nothing would be compared"):
        assert_rnn_close(nothing, nothing)
    assert_rnn_close((torch.ones(2), None), (torch.ones(2), None))  # one tensor compared: fine


@pytest.mark.parametrize("actual, expected, side",
                         [(3, 3, "actual is int"), (torch.ones(2), [1.0, 1.0], "expected is list")],
                         ids=["int", "list"])
def test_assert_close_compares_tensors_only(actual, expected, side):
    with pytest.raises(TypeError, match=f"assert_close compares tensors .*; {side}"):
        assert_close(actual, expected)
