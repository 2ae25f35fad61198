"""`python -m fastrnn check`: the battery per backend, its table and its exit status."""
import argparse
import os
import subprocess
import sys

import pytest

from fastrnn import check


def _run(argv, capsys):
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    status = check.main(parser.parse_args(argv))
    return status, capsys.readouterr().out


def test_torch_and_reference_pass(capsys):
    status, out = _run(["--device", "cpu", "--backend", "torch", "--backend", "reference", "--cases", "T1-B1"],
                       capsys)
    assert status == 0, out
    for label in ("torch.nn.RNN", "torch.nn.LSTM", "fastrnn.RNN[reference]", "fastrnn.LSTM[reference]"):
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
