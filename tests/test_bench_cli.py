"""`python -m fastrnn bench` on a tiny slice of the registry, and the registry itself."""
import argparse
import json
import sys

import pytest
import torch

from fastrnn import bench, registry


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
    # the grid: 2 cells x 4 T x 4 B x 3 H x 2 layers x 2 directions x 2 modes, fp32 on CPU
    assert len([c for c in registry.full_grid("cpu") if not c.packed]) == 2 * 4 * 4 * 3 * 2 * 2 * 2
    assert {c.dtype for c in registry.full_grid("cuda")} == {"fp32", "bf16"}
    assert {c.dtype for c in registry.full_grid("cpu")} == {"fp32"}


def test_case_id_and_lengths():
    case = registry.Case("lstm", 64, 16, 256, 1, False, "fp32", "train")
    assert case.id == "lstm-T64-B16-H256-L1-uni-fp32-train"
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


def test_cli_packed_case_runs(tmp_path):
    out = tmp_path / "packed.json"
    assert _run(["--quick", "--device", "cpu", "--cases", "rnn-,packed", "--max-cases", "1", "--samples", "1",
                 "--min-sample-ms", "0", "--no-reference", "--json", str(out)]) == 0
    [result] = json.loads(out.read_text())["results"]
    assert result["packed"] and set(result["median_s"]) == {"torch.nn", "fastrnn"}


def test_cli_rejects_unknown_filter(capsys):
    assert _run(["--quick", "--device", "cpu", "--cases", "no-such-case"]) == 2
    assert "no case matches" in capsys.readouterr().err


def test_plot_without_matplotlib_fails_before_timing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` raise
    assert _run(["--quick", "--device", "cpu", "--plot"]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


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


def test_python_m_fastrnn_bench_is_wired(capsys):
    """`python -m fastrnn bench` reaches this module (the cheap error path, no timing)."""
    from fastrnn.__main__ import main
    assert main(["bench", "--quick", "--device", "cpu", "--cases", "no-such-case"]) == 2
    assert "no case matches" in capsys.readouterr().err
