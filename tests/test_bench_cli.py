"""`python -m fastrnn bench` on a tiny slice of the registry, and the registry itself."""
import argparse
import json
import pathlib
import re
import subprocess
import sys
import types

import pytest
import torch

from fastrnn import bench, registry

import outcomes


def _run(argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.main(parser.parse_args(argv))


def test_registry_ids_unique_and_quick_is_a_subset():
    for device in ("cpu", "cuda"):
        full = registry.full_grid(device)
        ids = [c.id for c in full]
        assert len(ids) == len(set(ids))
        assert {c.id for c in registry.quick(device)} <= set(ids)
    # the grid: 3 cells x 4 T x 4 B x 3 H x 2 layers x 2 directions x 2 modes, fp32 on CPU
    assert len([c for c in registry.full_grid("cpu") if not c.packed]) == 3 * 4 * 4 * 3 * 2 * 2 * 2
    assert {c.dtype for c in registry.full_grid("cuda")} == {"fp32", "fp16", "bf16"}
    assert {c.dtype for c in registry.full_grid("cpu")} == {"fp32"}


ANCHOR = {f"lstm-T1024-B16-H768-L1-uni-{dt}-{mode}" for dt in ("fp16", "bf16") for mode in ("infer", "train")}


def test_registry_has_flashrnn_anchor_on_cuda_only():
    """Anchor (a), FlashRNN's LSTM shape (I = H, as every case), in fp16 and bf16: in the full grid
    and the quick set on CUDA, where fp16 appears nowhere else; never on CPU, whose quick run stays small."""
    for grid in (registry.full_grid("cuda"), registry.quick("cuda")):
        assert ANCHOR <= {c.id for c in grid}
        assert {c.id for c in grid if c.dtype == "fp16"} == {i for i in ANCHOR if "fp16" in i}
    anchor = next(c for c in registry.quick("cuda") if c.id in ANCHOR and c.dtype == "fp16")
    assert anchor.torch_dtype == torch.float16
    for grid in (registry.full_grid("cpu"), registry.quick("cpu")):
        assert not {c.id for c in grid} & ANCHOR
    quick_cpu = registry.quick("cpu")
    assert len(quick_cpu) == 36 and max(c.T * c.H for c in quick_cpu) <= 512 * 64
    assert {c.cell for c in quick_cpu} == {"rnn", "lstm", "gru"}


def test_case_id_and_lengths():
    case = registry.Case("lstm", 64, 16, 256, 1, False, "fp32", "train")
    assert case.id == "lstm-T64-B16-H256-L1-uni-fp32-train"
    gru = registry.Case("gru", 1, 16, 256)
    assert gru.id == "gru-T1-B16-H256-L1-uni-fp32-infer"
    assert (gru.module_name, gru.torch_mode, gru.kernel_cell) == ("GRU", "GRU", "gru")
    assert (case.module_name, registry.Case("rnn", 1, 1, 64).kernel_cell) == ("LSTM", "elman")
    assert case.lengths() is None
    packed = registry.Case("rnn", 8, 4, 64, 2, True, "fp32", "infer", packed=True)
    assert packed.id == "rnn-T8-B4-H64-L2-bi-fp32-infer-packed"
    assert packed.lengths().tolist() == [8, 6, 4, 2]   # sorted, T down to T/4


def test_cli_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    status = _run(["--quick", "--device", "cpu", "--cases", "T1-B16,-uni-", "--max-cases", "3",
                   "--samples", "2", "--min-sample-ms", "0", "--json", str(out)])
    assert status == 0
    text = capsys.readouterr().out
    assert "torch.nn ms" in text and "fastrnn ms" in text and "speed-up" in text
    assert "strategy" in text.splitlines()[1] and "(aten)" in text   # auto on CPU runs torch's kernels
    data = json.loads(out.read_text())
    assert data["environment"]["device"] == "cpu"
    assert data["environment"]["torch"] == torch.__version__
    ids = [r["id"] for r in data["results"]]
    assert ids == [c.id for c in registry.select(registry.quick("cpu"), "T1-B16,-uni-", 3)]
    for r in data["results"]:
        assert r["dtype"] == "fp32"
        assert r["median_s"]["torch.nn"] > 0 and r["median_s"]["fastrnn"] > 0
        assert r["median_s"]["reference"] > 0          # T1-B16-H256 is a cheap case
        assert len(r["samples_s"]["fastrnn"]) == 2 and r["noise"] >= 0
        assert r["id"] in text
        assert r["strategy"] == {"backend": "aten", "fwd": None, "bwd": None, "fallback": False}


def test_cli_packed_case_runs(tmp_path):
    out = tmp_path / "packed.json"
    assert _run(["--quick", "--device", "cpu", "--cases", "rnn-,packed", "--max-cases", "1", "--samples", "1",
                 "--min-sample-ms", "0", "--no-reference", "--json", str(out)]) == 0
    [result] = json.loads(out.read_text())["results"]
    assert result["packed"] and set(result["median_s"]) == {"torch.nn", "fastrnn"}




@pytest.mark.parametrize("case_id", ["lstm-T1-B16-H256-L1-uni-fp32-train", "rnn-T64-B16-H64-L2-bi-fp32-infer-packed"])
def test_fastrnn_and_torch_compute_the_same(case_id):
    """The two timed callables run the same maths (so the speed-up compares like with like)."""
    case = next(c for c in registry.quick("cpu") if c.id == case_id)
    torch.manual_seed(0)
    base = bench._torch_module(case, "cpu")
    fast = bench._fastrnn_module(case, base, "auto")
    x, hx, _ = bench._inputs(case, "cpu")
    want, got = base(x, hx)[0], fast(x, hx)[0]
    want, got = (want.data, got.data) if case.packed else (want, got)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# --- misuse: exit 2 with argparse's usage line and one error line, before any timing -----------
@pytest.fixture
def no_timing(monkeypatch):
    """Misuse must be reported before the first case is timed."""
    def run_case(*args, **kwargs):
        raise AssertionError("bench timed a case before reporting the misuse")
    monkeypatch.setattr(bench, "run_case", run_case)


def usage_error(capsys, *argv):
    return outcomes.usage_error(capsys, "bench", *argv)


QUICK = ["--quick", "--cases", "rnn-T1-B16,infer", "--samples", "1", "--min-sample-ms", "0", "--no-reference"]


@pytest.mark.parametrize("argv, message", [
    (["--samples", "0"], "argument --samples: expected a positive integer, got '0'"),
    (["--samples", "-3"], "argument --samples: expected a positive integer, got '-3'"),
    (["--samples", "two"], "argument --samples: expected a positive integer, got 'two'"),
    (["--threads", "-2"], "argument --threads: expected a positive integer, got '-2'"),
    (["--threads", "0"], "argument --threads: expected a positive integer, got '0'"),
    (["--max-cases", "0"], "argument --max-cases: expected a positive integer, got '0'"),
    (["--max-cases", "-1"], "argument --max-cases: expected a positive integer, got '-1'"),
    (["--min-sample-ms", "-5"], "argument --min-sample-ms: expected a finite number >= 0, got '-5'"),
    (["--min-sample-ms", "nan"], "argument --min-sample-ms: expected a finite number >= 0, got 'nan'"),
    (["--min-sample-ms", "inf"], "argument --min-sample-ms: expected a finite number >= 0, got 'inf'"),
    (["--parity-tol", "-0.1"], "argument --parity-tol: expected a fraction in [0, 1), e.g. 0.05, got '-0.1'"),
    (["--parity-tol", "nan"], "argument --parity-tol: expected a fraction in [0, 1), e.g. 0.05, got 'nan'"),
    (["--parity-tol", "1"], "argument --parity-tol: expected a fraction in [0, 1), e.g. 0.05, got '1'"),
    (["--cases", ","], "argument --cases: expected comma-separated parts of case ids, got ','"),
    (["--cases", ""], "argument --cases: expected comma-separated parts of case ids, got ''"),
    (["--backend", "foo"], "argument --backend: invalid choice: 'foo'"),
    (["--device", "foo"], "argument --device: not a torch device: 'foo' (use cpu or cuda)"),
    (["--device", ""], "argument --device: not a torch device: '' (use cpu or cuda)"),
    (["--device", "cuda:x"], "argument --device: not a torch device: 'cuda:x' (use cpu or cuda)"),
    (["--device", "meta"], "argument --device: 'meta': nothing can be timed on the meta device"),
    (["--device", "mps"], "argument --device: 'mps': bench times on cpu or cuda"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_cli_rejects_bad_option(capsys, no_timing, argv, message):
    assert usage_error(capsys, *QUICK, *argv).startswith(message)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cli_rejects_cuda_without_cuda(monkeypatch, capsys, no_timing, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = usage_error(capsys, *QUICK, "--device", device)
    assert message.startswith(f"argument --device: {device!r}: CUDA is not available here (")


def test_cli_rejects_a_cuda_index_past_the_last_device(monkeypatch, capsys, no_timing):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    message = usage_error(capsys, *QUICK, "--device", "cuda:1")
    assert message == "argument --device: 'cuda:1': this machine has 1 CUDA device(s)"


def test_cli_rejects_unknown_filter(capsys, no_timing):
    assert usage_error(capsys, "--quick", "--device", "cpu", "--cases", "no-such-case") == \
        "--cases: no case matches 'no-such-case'"


def test_plot_without_matplotlib_fails_before_timing(monkeypatch, capsys, no_timing):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` raise
    assert usage_error(capsys, "--quick", "--device", "cpu", "--plot") == \
        "--plot needs matplotlib (pip install matplotlib)"


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def test_cli_rejects_a_backend_that_cannot_run_here(capsys, no_timing, no_interpreter):
    message = usage_error(capsys, *QUICK, "--device", "cpu", "--backend", "triton")
    assert message.startswith("--backend triton: backend='triton' on CPU tensors runs Triton's interpreter")


@pytest.fixture
def bad_backend_env(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "bogus")


def test_cli_rejects_a_bad_fastrnn_backend_variable(capsys, no_timing, bad_backend_env):
    assert usage_error(capsys, *QUICK, "--device", "cpu").startswith("--backend auto: FASTRNN_BACKEND must be")


def test_cli_rejects_an_unwritable_json_path_before_timing(tmp_path, capsys, no_timing):
    assert usage_error(capsys, *QUICK, "--device", "cpu", "--json", str(tmp_path)) == \
        f"--json {tmp_path}: is a directory"
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "bench.json"       # its parent is a file
    assert usage_error(capsys, *QUICK, "--device", "cpu", "--json", str(bad)).startswith(
        f"--json {bad}: cannot create {bad.parent}: ")


def test_cli_rejects_an_unwritable_plot_path_before_timing(tmp_path, monkeypatch, capsys, no_timing):
    monkeypatch.setitem(sys.modules, "matplotlib", types.ModuleType("matplotlib"))  # importable
    assert usage_error(capsys, *QUICK, "--device", "cpu", "--json", str(tmp_path / "b.json"),
                       "--plot", str(tmp_path)) == f"--plot {tmp_path}: is a directory"


def test_library_guards_behind_the_cli():
    with pytest.raises(ValueError, match="max_cases must be at least 1"):
        registry.select(registry.quick("cpu"), None, 0)
    assert len(registry.select(registry.quick("cpu"), None, 2)) == 2
    with pytest.raises(ValueError, match="samples must be at least 1"):
        bench.time_callables({"noop": lambda: None}, samples=0)


def test_cli_threads_apply_to_the_run_and_are_restored(tmp_path, monkeypatch):
    seen, before = [], torch.get_num_threads()
    fake = {"id": "fake", "median_s": {"torch.nn": 1.0, "fastrnn": 1.0}, "speedup": 1.0, "noise": 0.0,
            "strategy": {"backend": "aten", "fwd": None, "bwd": None, "fallback": False}}
    monkeypatch.setattr(bench, "run_case", lambda *a, **k: seen.append(torch.get_num_threads()) or fake)
    from fastrnn.__main__ import main
    assert main(["bench", *QUICK, "--device", "cpu", "--threads", "1", "--json", str(tmp_path / "b.json")]) == 0
    assert seen == [1] and torch.get_num_threads() == before


def test_benchmarks_reject_a_bad_bench_device():
    """benchmarks/'s --bench-device goes through the same check (pytest's usage error, status 4)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                           str(root / "benchmarks"), "--bench-device", "meta"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "argument --bench-device: 'meta': nothing can be timed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_python_m_fastrnn_bench_is_wired(tmp_path, capsys):
    """`python -m fastrnn bench` reaches this module and runs a valid invocation."""
    from fastrnn.__main__ import main
    out = tmp_path / "b.json"
    assert main(["bench", *QUICK, "--device", "cpu", "--threads", "1", "--parity-tol", "0",
                 "--json", str(out)]) == 0
    assert "rnn-T1-B16-H256-L1-uni-fp32-infer" in capsys.readouterr().out
    assert json.loads(out.read_text())["results"][0]["id"] == "rnn-T1-B16-H256-L1-uni-fp32-infer"


# --- which launch strategy the triton backend takes, and which kernel torch.nn runs -------------
def _case(case_id):
    return next(c for c in registry.full_grid("cuda") if c.id == case_id)


@pytest.mark.parametrize("case_id, device, fwd, bwd, text", [
    # on a GPU the heuristic splits H >= 128 (a split that may fall back to stepwise at launch)
    ("lstm-T1024-B16-H768-L1-uni-bf16-train", "cuda", ["split"], ["split"], "split/split*"),
    ("lstm-T1024-B16-H768-L1-uni-fp16-infer", "cuda", ["split"], None, "split*"),
    ("rnn-T64-B16-H64-L2-bi-fp32-train", "cuda", ["rows", "rows"], ["rows", "rows"], "rows/rows"),
    # under the interpreter split's twin, stepwise
    ("lstm-T1024-B16-H768-L1-uni-fp16-train", "cpu", ["stepwise"], ["stepwise"], "stepwise/stepwise"),
    ("rnn-T64-B1-H64-L1-uni-fp32-infer", "cpu", ["rows"], None, "rows"),
])
def test_triton_strategies_follow_launch_config(case_id, device, fwd, bwd, text):
    plan = bench.triton_strategies(_case(case_id), device)
    assert (plan["fwd"], plan["bwd"]) == (fwd, bwd)
    assert bench.strategy_text({"backend": "triton", **plan}) == text


@pytest.fixture
def rows_strategy(monkeypatch):
    monkeypatch.setenv("FASTRNN_TRITON_STRATEGY", "rows")


def test_triton_strategies_follow_the_environment(rows_strategy):
    plan = bench.triton_strategies(_case("lstm-T1024-B16-H768-L1-uni-bf16-train"), "cuda")
    assert plan == {"fwd": ["rows"], "bwd": ["rows"], "fallback": False}


def test_launch_strategies_off_triton_name_the_backend():
    case = _case("rnn-T64-B16-H64-L2-bi-fp32-train")
    plan = bench.launch_strategies(case, "cpu", "reference")
    assert plan == {"backend": "reference", "fwd": None, "bwd": None, "fallback": False}
    assert bench.strategy_text(plan) == "(reference)"
    assert bench.launch_strategies(case, "cpu", "triton")["fwd"] == ["rows", "rows"]


def test_cli_shows_the_triton_strategy(tmp_path, monkeypatch, capsys):
    """--backend triton on CPU: the table's strategy column and the JSON's field (timing stubbed:
    the interpreter is slow, and what is checked here is the reporting)."""
    monkeypatch.setattr(bench, "make_callables", lambda *a, **k: {"torch.nn": lambda: None, "fastrnn": lambda: None})
    out = tmp_path / "b.json"
    assert _run([*QUICK, "--device", "cpu", "--backend", "triton", "--json", str(out)]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("rnn-T1-B16")]
    assert row.split()[1] == "stepwise"          # H=256: the heuristic's split, as stepwise on CPU
    [result] = json.loads(out.read_text())["results"]
    assert result["strategy"] == {"backend": "triton", "fwd": ["stepwise"], "bwd": None, "fallback": False}


@pytest.fixture
def split_strategy(monkeypatch):
    monkeypatch.setenv("FASTRNN_TRITON_STRATEGY", "split")


def test_cli_rejects_a_strategy_that_cannot_run_here(capsys, no_timing, split_strategy):
    message = usage_error(capsys, *QUICK, "--device", "cpu", "--backend", "triton")
    assert message.startswith("--backend triton: the 'split' strategy needs a GPU")


@pytest.mark.parametrize("cell, dtype, kernel", [("lstm", torch.float32, "mkldnn"), ("rnn", torch.bfloat16, "native")])
def test_torch_nn_kernel_names_the_kernel_that_ran(cell, dtype, kernel):
    if kernel == "mkldnn" and not torch.backends.mkldnn.is_available():
        kernel = "native"
    m = (torch.nn.LSTM if cell == "lstm" else torch.nn.RNN)(8, 8).to(dtype)
    x = torch.randn(3, 2, 8, dtype=dtype)
    assert bench.torch_nn_kernel(lambda: m(x)) == kernel


@pytest.mark.parametrize("case_id", sorted(ANCHOR))
def test_torch_nn_runs_in_the_case_dtype(case_id):
    """cuDNN (torch.nn) is timed in the case's dtype, as fastrnn is (built here on CPU: same code)."""
    case = _case(case_id)
    base = bench._torch_module(case, "meta")
    assert {p.dtype for p in base.parameters()} == {case.torch_dtype}
    assert {t.dtype for t in bench._inputs(case, "meta")[:2] for t in (t if isinstance(t, tuple) else (t,))} == \
        {case.torch_dtype}


def test_triton_strategies_follow_autos_choice():
    plan = bench.triton_strategies(_case("lstm-T1024-B16-H768-L1-uni-bf16-train"), "cuda", "rows")
    assert plan == {"fwd": ["rows"], "bwd": ["rows"], "fallback": False}


# --- what auto chose, on CUDA --------------------------------------------------------------------
def _cuda_result(auto):
    return {"id": "lstm-T64-B16-H256-L1-uni-bf16-infer", "median_s": {"torch.nn": 1e-3, "fastrnn": 5e-4},
            "speedup": 2.0, "noise": 0.01, "strategy": {"backend": "triton", "fwd": ["split"], "bwd": None,
                                                        "fallback": False},
            "torch_nn_kernel": "cudnn", "peak_bytes": {"torch.nn": 2**20, "fastrnn": 2**20}, "auto": auto}


def test_cuda_table_shows_autos_choice_beside_each_candidates_time():
    env = {"device": "cuda", "device_name": "Fake GPU", "torch": "t", "threads": 1}
    auto = {"choice": "triton:split", "times_ms": {"aten": 1.0, "triton:rows": 0.75, "triton:split": 0.5},
            "excluded": {"triton:stepwise": "raised ValueError: ..."}}
    _, head, _, row, *rest = bench.format_table([_cuda_result(auto)], env, 0.05).splitlines()
    cells = lambda line: re.split(r"\s{2,}", line.strip())
    assert cells(head)[-2:] == ["auto", "auto's candidates ms"]
    assert cells(row)[-2:] == ["triton:split", "aten=1.000 triton:rows=0.750 triton:split=0.500"]
    assert any(line.startswith("auto: what backend='auto' chose") for line in rest)
    _, _, _, row, *_ = bench.format_table([_cuda_result(None)], env, 0.05).splitlines()  # auto not used
    assert cells(row)[-2:] == ["-", "-"]


def test_cpu_table_has_no_auto_columns():
    result = {k: v for k, v in _cuda_result(None).items() if k not in ("torch_nn_kernel", "peak_bytes", "auto")}
    text = bench.format_table([result], {"device": "cpu", "device_name": "cpu", "torch": "t", "threads": 1}, 0.05)
    assert "auto" not in text


def test_auto_decision_reads_the_cache_of_the_case(tmp_path, monkeypatch):
    from fastrnn import autotune, tune, tunecache
    monkeypatch.setenv(tunecache.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(autotune.ENV, raising=False)
    monkeypatch.setattr(tunecache, "identity", lambda device: {"gpu": "Fake GPU"})
    monkeypatch.setattr(tunecache, "_CACHES", {})
    monkeypatch.setattr(tunecache, "_BY_DEVICE", {})
    case = _case("lstm-T1024-B16-H768-L1-uni-fp16-infer")
    assert bench.auto_decision(case, "cpu") is None and bench.auto_decision(case, "cuda:0", "triton") is None
    record = {"choice": "aten", "times_ms": {"aten": 1.0}, "excluded": {}}
    key = autotune.cache_key(tune.case_signature(case, tf32=False))
    tunecache.for_device("cuda:0").put(key, record)
    assert bench.auto_decision(case, "cuda:0") == record
    monkeypatch.setenv(autotune.ENV, "0")
    assert bench.auto_decision(case, "cuda:0") == {"choice": "aten"}  # the static rule: cuDNN's persistent case
    bf16 = _case("lstm-T1024-B16-H768-L1-uni-bf16-infer")
    assert bench.auto_decision(bf16, "cuda:0") == {"choice": "triton"}
