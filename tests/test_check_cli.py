"""`python -m fastrnn check`: the battery per backend, its table and its exit status."""
import argparse
import os
import subprocess
import sys

import pytest
import torch

from fastrnn import check

import outcomes


def _run(argv, capsys):
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    status = check.main(parser.parse_args(argv))
    return status, capsys.readouterr().out


def test_torch_and_reference_pass(capsys):
    status, out = _run(["--device", "cpu", "--backend", "torch", "--backend", "reference", "--cases", "T1-B1"],
                       capsys)
    assert status == 0, out
    for label in ("torch.nn.RNN", "torch.nn.LSTM", "torch.nn.GRU", "fastrnn.RNN[reference]",
                  "fastrnn.LSTM[reference]", "fastrnn.GRU[reference]"):
        line = next(line for line in out.splitlines() if line.startswith(label + " "))
        assert line.endswith("PASS") and "float64" in line
    assert "FAIL" not in out and out.rstrip().endswith("all passed")


def test_triton_through_the_interpreter(capsys):
    # conftest.py set TRITON_INTERPRET=1 before anything imported the kernels.
    status, out = _run(["--device", "cpu", "--backend", "triton", "--cases", "T1-B1", "-v"], capsys)
    assert status == 0, out
    assert "RNN_RELU-T1-B1-H7-L1-hx" in out and "LSTM-T1-B1-H7-L1-hx" in out  # -v prints every case
    assert "fastrnn.LSTM[triton]" in out and "float32" in out and "FAIL" not in out


def test_failure_sets_exit_status_and_explains(capsys):
    # torch.nn differs from the reference by rounding, so zero tolerance must fail every case.
    status, out = _run(["--backend", "torch", "--cases", "LSTM-T5-B3-H7-L1", "--atol", "0", "--rtol", "0"], capsys)
    assert status == 1
    assert "torch.nn.LSTM" in out and "FAIL" in out and "elements differ" in out
    assert out.rstrip().endswith("FAILED")


def test_a_cell_without_kernels_is_skipped_on_triton_unless_asked_for(capsys, monkeypatch):
    """A cell whose fused op this fastrnn lacks: its triton row says so (SKIP, or FAIL when triton
    was asked for by name); the other implementations of that cell still run."""
    from fastrnn import fused
    monkeypatch.delattr(fused, "gru_directions", raising=False)
    status, out = _run(["--device", "cpu", "--cases", "GRU-T1"], capsys)
    assert status == 0, out
    assert "SKIP: fastrnn.fused has no gru_directions" in out
    for label in ("torch.nn.GRU", "fastrnn.GRU[reference]", "fastrnn.GRU[aten]"):
        assert next(line for line in out.splitlines() if line.startswith(label + " ")).endswith("PASS")
    status, out = _run(["--device", "cpu", "--backend", "triton", "--cases", "GRU-T1"], capsys)
    assert status == 1 and "FAIL: fastrnn.fused has no gru_directions" in out


def test_unavailable_backend_fails_only_when_asked_for(capsys, monkeypatch):
    monkeypatch.setattr("fastrnn.backends.triton_available", lambda: False)
    assert check.unavailable_reason("triton", "cpu") == "the triton package is not installed"
    assert check.unavailable_reason("reference", "cpu") is None
    status, out = _run(["--backend", "triton"], capsys)
    assert status == 1 and "FAIL: the triton package is not installed" in out


@pytest.fixture
def env_without_interpreter():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return env


def test_command_line_sets_the_interpreter_itself(env_without_interpreter):
    proc = subprocess.run([sys.executable, "-m", "fastrnn", "check", "--device", "cpu", "--backend", "triton",
                           "--cases", "LSTM-T1"], capture_output=True, text=True, env=env_without_interpreter,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "this command set TRITON_INTERPRET=1" in proc.stdout
    assert "fastrnn.LSTM[triton]" in proc.stdout and "PASS" in proc.stdout


# --- misuse: exit 2 with argparse's usage line and one error line, before anything runs ---------
@pytest.fixture
def nothing_runs(monkeypatch):
    """Misuse must be reported before the battery runs on any module."""
    def check_module(*args, **kwargs):
        raise AssertionError("check ran the battery before reporting the misuse")
    monkeypatch.setattr("fastrnn.testing.check_module", check_module)


def usage_error(capsys, *argv):
    return outcomes.usage_error(capsys, "check", *argv)


@pytest.mark.parametrize("argv, message", [
    (["--device", "foo"], "argument --device: not a torch device: 'foo' (use cpu or cuda)"),
    (["--device", ""], "argument --device: not a torch device: '' (use cpu or cuda)"),
    (["--device", "cuda:x"], "argument --device: not a torch device: 'cuda:x' (use cpu or cuda)"),
    (["--device", "meta"], "argument --device: 'meta': meta tensors hold no values, so there is nothing to check"),
    (["--device", "meta", "--backend", "torch"], "argument --device: 'meta': meta tensors hold no values"),
    (["--atol=-1e-6"], "argument --atol: expected a finite number >= 0, got '-1e-6'"),
    (["--atol", "nan"], "argument --atol: expected a finite number >= 0, got 'nan'"),
    (["--atol", "inf"], "argument --atol: expected a finite number >= 0, got 'inf'"),
    (["--atol", "1e400"], "argument --atol: expected a finite number >= 0, got '1e400'"),  # inf as a float
    (["--atol", "tiny"], "argument --atol: expected a finite number >= 0, got 'tiny'"),
    (["--rtol", "-0.5"], "argument --rtol: expected a finite number >= 0, got '-0.5'"),
    (["--rtol", "NaN"], "argument --rtol: expected a finite number >= 0, got 'NaN'"),
    (["--rtol", "inf"], "argument --rtol: expected a finite number >= 0, got 'inf'"),
    (["--rtol=-inf"], "argument --rtol: expected a finite number >= 0, got '-inf'"),
    (["--backend", "foo"], "argument --backend: invalid choice: 'foo'"),
    (["--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
    (["--cases", ""], "argument --cases: expected a non-empty part of a case id, got ''"),
    (["--cases", "nothing"], "--cases: no case id contains 'nothing'"),
    (["--cases", "T1-B1", "--cases", "typo"], "--cases: no case id contains 'typo'"),  # each must select
    (["--quick", "--cases", "nobias"], "--cases: no case id of the --quick battery contains 'nobias'"),
    (["--backend", "triton", "--dtype", "float64"],
     "--backend triton: backend='triton' runs float32, float16 and bfloat16, got torch.float64"),
    (["--backend", "reference", "--backend", "triton", "--dtype", "float64"],
     "--backend triton: backend='triton' runs"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_cli_rejects_bad_option(capsys, nothing_runs, argv, message):
    assert usage_error(capsys, *argv).startswith(message)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cli_rejects_cuda_without_cuda(monkeypatch, capsys, nothing_runs, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = usage_error(capsys, "--backend", "torch", "--device", device)
    assert message.startswith(f"argument --device: {device!r}: CUDA is not available here (")


def test_cli_rejects_a_cuda_index_past_the_last_device(monkeypatch, capsys, nothing_runs):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert usage_error(capsys, "--device", "cuda:1") == "argument --device: 'cuda:1': this machine has 1 CUDA device(s)"


def test_cli_rejects_a_device_that_cannot_hold_tensors(monkeypatch, capsys, nothing_runs):
    def empty(*args, **kwargs):
        raise NotImplementedError("Could not run 'aten::empty.memory_format' on 'MPS'.\n\nMore lines.")
    monkeypatch.setattr(torch, "empty", empty)
    assert usage_error(capsys, "--device", "mps") == \
        "argument --device: 'mps': cannot hold tensors here (NotImplementedError: Could not run " \
        "'aten::empty.memory_format' on 'MPS'.)"


def test_cli_accepts_the_devices_check_runs_on(monkeypatch):
    assert check.check_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check.check_device("cuda") == torch.device("cuda")
    assert check.check_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: None)  # a device that holds tensors
    assert check.check_device("mps") == torch.device("mps")


def test_each_case_filter_may_select_one_kind(capsys):
    status, out = _run(["--backend", "reference", "--cases", "LSTM-T1", "--cases", "RNN_TANH-T1", "-v"], capsys)
    assert status == 0, out
    assert "LSTM-T1-B1-H7-L1-hx" in out and "RNN_TANH-T1-B1-H7-L1-hx" in out and "RNN_RELU" not in out


def test_cli_rejects_triton_on_a_device_triton_does_not_run_on(monkeypatch, capsys, nothing_runs):
    monkeypatch.setattr(check, "check_device", torch.device)  # as if this machine had an mps device
    assert usage_error(capsys, "--device", "mps", "--backend", "triton") == \
        "--backend triton: Triton does not run on mps"


def test_a_dtype_triton_does_not_run_skips_its_rows_unless_asked_for(capsys):
    status, out = _run(["--dtype", "float64", "--cases", "LSTM-T1-B1"], capsys)
    assert status == 0, out
    assert "fastrnn.LSTM[aten]" in out and "fastrnn.LSTM[triton]" not in out
    line = next(line for line in out.splitlines() if line.startswith("triton "))
    assert "SKIP: backend='triton' runs float32, float16 and bfloat16, got torch.float64" in line
