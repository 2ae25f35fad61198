"""`python -m fastrnn inspect`: the grid, the strategies, the dedupe into compile jobs, and real
sm_90 compiles.

Runs under the suite's TRITON_INTERPRET=1: the inspection loads its own compilable kernels.
"""
import argparse
import json
import re
from collections import Counter

import pytest
import torch

from fastrnn import inspection
from fastrnn.kernels import config

import outcomes

_constexprs = inspection.constexprs


def _case(**kw):
    base = dict(cell="elman", pass_="fwd", dtype="fp32", B=16, H=32, train=False, reverse=True,
                lengths=True, relu=False, tf32=False, strategy="auto")
    return inspection.Case(**{**base, **kw})


def test_grid_covers_the_issue_grid():
    cases = inspection.grid()
    assert {c.H for c in cases} == {32, 64, 128, 256, 512, 1024, 2048}
    assert {c.B for c in cases} == {1, 16, 64, 256}
    assert {c.dtype for c in cases} == {"fp32", "fp16", "bf16"}
    assert {(c.cell, c.pass_, c.train) for c in cases} == {
        ("elman", "fwd", False), ("elman", "bwd", True),
        ("lstm", "fwd", False), ("lstm", "fwd", True), ("lstm", "bwd", True),
        ("lstm-proj", "fwd", False), ("lstm-proj", "fwd", True), ("lstm-proj", "bwd", True),
        ("gru", "fwd", False), ("gru", "fwd", True), ("gru", "bwd", True)}
    assert len(set(cases)) == len(cases)
    everything = inspection.grid(quick=True, flags="all")
    assert {(c.reverse, c.lengths) for c in everything} == {(r, n) for r in (0, 1) for n in (0, 1)}
    assert {c.relu for c in everything} == {False, True} and {c.tf32 for c in everything} == {False, True}
    assert {c.strategy for c in cases} == {"auto"}


def test_grid_repeats_every_point_per_strategy():
    auto = inspection.grid(quick=True)
    forced = inspection.grid(quick=True, strategies=inspection.STRATEGIES)
    assert len(forced) == 3 * len(auto)
    for s in inspection.STRATEGIES:
        assert [c._replace(strategy="auto") for c in forced if c.strategy == s] == auto


def test_strategies_are_the_launch_configs():
    assert inspection.STRATEGIES == config.STRATEGIES


def _gpu_config(case):
    """launch_config(..., 'cuda') of `case`: what a GPU launch of it would get."""
    cell = inspection.kernel_cell(case.cell)
    R = case.H // 2 if case.cell == "lstm-proj" else case.H
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = case.tf32
    try:
        return config.launch_config(cell, case.pass_, case.B, case.H, R, inspection.DTYPES[case.dtype], "cuda",
                                    save=inspection.saves(case),
                                    override=None if case.strategy == "auto" else {"STRATEGY": case.strategy})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


LAUNCHES = [
    _case(),
    _case(dtype="bf16", H=128, B=64),
    _case(cell="lstm", dtype="fp16", H=64, B=1, train=True),
    _case(cell="lstm-proj", pass_="bwd", dtype="bf16", H=256, B=256, train=True),
    _case(cell="elman", pass_="bwd", dtype="fp32", H=2048, B=64, train=True, tf32=True),
    _case(cell="lstm", pass_="fwd", dtype="fp32", H=512, B=1, train=True),
    _case(cell="gru", pass_="fwd", dtype="bf16", H=1024, B=16, train=True),
    _case(cell="gru", pass_="bwd", dtype="fp16", H=64, B=64, train=True),
]


def _id(c):
    return f"{c.cell}-{c.pass_}-H{c.H}-B{c.B}-{c.dtype}{'-tf32' if c.tf32 else ''}-{c.strategy}"


@pytest.mark.parametrize("case", LAUNCHES + [c._replace(strategy=s) for c in LAUNCHES for s in config.STRATEGIES],
                         ids=_id)
def test_job_is_the_gpu_launch_config(case):
    """The recorded launch carries exactly launch_config(..., 'cuda') and the case's flags; a forced
    strategy reaches the kernel's STRATEGY constexpr (stepwise runs the split kernel)."""
    job = inspection.specialize(case, 90)
    c = _constexprs(job)
    cfg = _gpu_config(case)
    for key in ("BLOCK_B", "BLOCK_H", "BLOCK_K", "PIECES", "W_RESIDENT", "DOT_FP32", "PRECISION"):
        assert c[key] == cfg[key], key
    assert c["STRATEGY"] == ("rows" if cfg["STRATEGY"] == "rows" else "split")
    if case.strategy != "auto":
        assert cfg["STRATEGY"] == case.strategy
    options = dict(job[6])
    assert (options["num_warps"], options["num_stages"]) == (cfg["num_warps"], cfg["num_stages"])
    assert options["maxnreg"] == cfg["maxnreg"]  # what ptxas is told, so what its registers are checked under
    assert "REVERSE" not in c and "HAS_LENGTHS" not in c  # runtime: one binary for every setting
    assert c["PROJ"] == (case.cell == "lstm-proj")
    assert ("w_hr_ptr" in c) == (case.cell != "lstm-proj") and c.get("w_hr_ptr") is None  # None pointer
    c_state = "c_ptr" if case.pass_ == "fwd" else "cs_ptr"
    assert (c_state in c) == (case.cell in ("elman", "gru"))  # a cell without c passes None: a constexpr
    assert ("sync_ptr" in c) == (c["STRATEGY"] == "rows")  # rows passes no barrier counters (None)
    if case.pass_ == "fwd":
        assert c["SAVE"] == inspection.saves(case) == (case.train and case.cell != "elman")
        assert ("rb_ptr" in c) == (case.cell != "gru")  # GRU's b_hn; None (a constexpr) for the rest
    assert (c.get("B") == 1) == (case.B == 1)  # Triton specializes an int argument equal to 1
    signature = dict(job[3])
    ptr = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16"}[case.dtype]
    assert signature["w_hh_ptr"] == ptr and signature["len_ptr"] == "*i32"
    assert "reverse" in signature and "grid_sync" in signature  # not specialized (do_not_specialize)


def test_auto_ignores_the_strategy_environment_variable(monkeypatch):
    """'auto' is the heuristic's choice, not whatever FASTRNN_TRITON_STRATEGY says in this process."""
    monkeypatch.setenv(config.ENV, "stepwise")
    assert _constexprs(inspection.specialize(_case(H=32), 90))["STRATEGY"] == "rows"
    assert _constexprs(inspection.specialize(_case(H=32, strategy="split"), 90))["STRATEGY"] == "split"


def test_dedupe_merges_only_identical_kernels():
    cases = [_case(pass_="bwd", train=True, H=H, B=B, strategy="rows") for H in (128, 2048) for B in (1, 64, 256)]
    cases += [_case(dtype="bf16", H=H, B=16, strategy="rows") for H in (32, 64, 128, 256, 2048)]
    jobs = inspection.plan(cases, archs=(80, 90))
    groups = sorted(sorted((c.pass_, c.dtype, c.H, c.B) for c in group) for group in jobs.values())
    bwd = [[("bwd", "fp32", H, B) for H in (128, 2048)] for B in (1,)]
    bwd += [sorted(("bwd", "fp32", H, B) for H in (128, 2048) for B in (64, 256))]
    fwd = [[("fwd", "bf16", H, 16)] for H in (32, 64)]  # resident W_hh (<= 16 KiB): a tile per H
    fwd += [[("fwd", "bf16", H, 16) for H in (128, 256, 2048)]]  # streamed: one kernel
    assert groups == sorted(2 * (bwd + fwd))  # once per architecture
    assert {job[2] for job in jobs} == {80, 90}


def test_split_and_stepwise_are_one_kernel():
    """Forced split and stepwise are the same compile jobs (stepwise launches the split kernel with
    its barrier off); auto compiles nothing the forced strategies do not."""
    cases = inspection.grid(quick=True, cells=("lstm-proj",), dtypes=("bf16",))
    forced = {s: inspection.plan([c._replace(strategy=s) for c in cases], archs=(90,)) for s in config.STRATEGIES}
    assert list(forced["split"]) == list(forced["stepwise"])
    assert {_constexprs(job)["STRATEGY"] for job in forced["stepwise"]} == {"split"}
    auto = inspection.plan(cases, archs=(90,))
    assert set(auto) <= set(forced["rows"]) | set(forced["split"])
    assert {_constexprs(job)["STRATEGY"] for job in auto} == {"rows", "split"}  # H 32, 64 and 128, 2048


def test_direction_and_lengths_add_no_kernels():
    """--flags all enumerates forward/reverse and with/without lengths: runtime arguments of the same
    binaries, so only relu (Elman) and TF32 (fp32) add compiles."""
    def jobs(flags, **kw):
        return inspection.plan(inspection.grid(quick=True, flags=flags, **kw), archs=(90,))
    assert list(jobs("all", cells=("lstm", "gru"), dtypes=("bf16",))) == list(jobs("worst", cells=("lstm", "gru"),
                                                                                    dtypes=("bf16",)))
    assert len(jobs("all", cells=("elman",), dtypes=("bf16",))) == 2 * len(jobs("worst", cells=("elman",),
                                                                                   dtypes=("bf16",)))


def test_parse_res_usage():
    text = ("\nResource usage:\n Common:\n  GLOBAL:0\n Function forward_kernel:\n"
            "  REG:168 STACK:8 SHARED:1024 LOCAL:4 CONSTANT[0]:608 TEXTURE:0 SURFACE:0 SAMPLER:0\n")
    res = inspection.parse_res_usage(text)["forward_kernel"]
    assert (res["REG"], res["STACK"], res["SHARED"], res["LOCAL"], res["CONSTANT"]) == (168, 8, 1024, 4, 608)


@pytest.mark.parametrize("strategy", ["rows", "split"])
def test_compile_one_config_for_sm90(strategy):
    """A real compile: rows (resident W_hh) and split (its grid barrier) at the same point."""
    job = inspection.specialize(_case(B=16, H=32, dtype="bf16", strategy=strategy), 90)
    res, = inspection.run_jobs([job], 1)
    assert 16 <= res["regs"] <= 255
    assert res["stack"] == res["local"] == res["spills"] == 0
    assert res["dynamic_shared"] > 0  # the tl.dot operands are staged through shared memory
    assert res["shared"] == res["static_shared"] + res["dynamic_shared"] <= inspection.SHARED_LIMIT[90]
    assert res["ok"] is True


def _args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    inspection.add_arguments(parser)
    argv = ["--quick", "--cell", "elman", "--dtype", "fp32", "--arch", "90", "--jobs", "1",
            "--json", str(tmp_path / "out.json"), *extra]
    return parser.parse_args(argv)


@pytest.mark.parametrize("verdict", ["ok", "spill", "shared", "error"])
def test_main_table_and_exit_status(tmp_path, monkeypatch, capsys, verdict):
    def fake_compile(job):  # stands in for a compile; the rest of main runs for real
        if verdict == "error":
            raise RuntimeError("ptxas fatal: boom")
        limit = inspection.SHARED_LIMIT[job[2]]
        spill = 16 if verdict == "spill" and job[1] == "backward_kernel" else 0
        shared = limit + 1 if verdict == "shared" and job[1] == "forward_kernel" else 1024
        return dict(regs=100, stack=spill, local=0, static_shared=0, dynamic_shared=shared, shared=shared,
                    spills=spill, limit=limit, ok=spill == 0 and shared <= limit, seconds=0.0)

    monkeypatch.setattr(inspection, "run_jobs", lambda jobs, processes: [inspection._safe_compile(job) for job in jobs])
    monkeypatch.setattr(inspection, "compile_job", fake_compile)
    status = inspection.main(_args(tmp_path))
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "out.json").read_text())
    assert status == (0 if verdict == "ok" else 1)
    assert re.search(r"^arch +kernel +cell +dtype +config +H +B +regs +spill +shared +status$", out, re.M)
    assert re.search(r"^sm_90 ", out, re.M) and not re.search(r"^sm_80 ", out, re.M)
    assert len(saved["kernels"]) > 0 and all(r["arch"] == "sm_90" for r in saved["kernels"])
    failed = [r for r in saved["kernels"] if not r["ok"]]
    counts = Counter(r["config"].split()[0] for r in saved["kernels"])
    summary = f"{len(saved['kernels'])} kernels ({_per_strategy(counts)}), {len(failed)} failed"
    if verdict == "ok":
        assert not failed and "FAIL" not in out
        assert f"\n{summary}, " in out
    else:
        assert failed and out.count("\nFAIL ") == len(failed)
        assert f"\n{summary} ({_per_strategy(Counter(r['config'].split()[0] for r in failed))}), " in out
        reason = {"spill": "spills 16 B stack", "shared": "> limit 232448 B", "error": "ptxas fatal"}[verdict]
        assert reason in out


def _per_strategy(counts):
    return ", ".join(f"{s} {counts[s]}" for s in config.STRATEGIES if counts[s])


def test_override_tries_a_heuristic():
    assert inspection._override("num_warps=8") == ("num_warps", 8)
    assert inspection._override("W_RESIDENT=False") == ("W_RESIDENT", False)
    assert inspection._override("PRECISION=tf32") == ("PRECISION", "tf32")
    job = inspection.specialize(_case(cell="lstm", H=128, B=64, strategy="rows"), 80,
                                override={"num_warps": 8, "BLOCK_K": 32})
    assert dict(job[6])["num_warps"] == 8 and _constexprs(job)["BLOCK_K"] == 32
    with pytest.raises(ValueError, match="unknown launch config key"):
        inspection.specialize(_case(), 80, override={"BLOCK_Q": 8})


def test_override_knows_every_launch_config_key():
    """Every key but STRATEGY, which --strategy sets per point."""
    assert set(inspection._override_values()) == set(config.KEYS) - {"STRATEGY"}
    assert inspection._override("BLOCK_K=32") == ("BLOCK_K", 32)
    assert inspection._override("DOT_FP32=True") == ("DOT_FP32", True)
    assert inspection._override("PIECES=2") == ("PIECES", 2)
    assert inspection._override("num_stages=1") == ("num_stages", 1)


# --- misuse: exit 2 with argparse's usage and one error line, before any compile ----------------
@pytest.fixture
def no_compile(monkeypatch):
    """Misuse must be reported before the first kernel is compiled."""
    def run_jobs(jobs, processes):
        raise AssertionError("inspect compiled kernels before reporting the misuse")
    monkeypatch.setattr(inspection, "run_jobs", run_jobs)


def usage_error(capsys, *argv):
    return outcomes.usage_error(capsys, "inspect", *argv)


SMALL = ["--quick", "--cell", "elman", "--dtype", "fp32", "--arch", "90"]
OVERRIDE = "argument --override: "


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "argument --jobs: expected a positive integer, got '0'"),
    (["--jobs", "-2"], "argument --jobs: expected a positive integer, got '-2'"),
    (["--jobs", "two"], "argument --jobs: expected a positive integer, got 'two'"),
    (["--override", "foo"], OVERRIDE + "expected KEY=VALUE, got 'foo'"),
    (["--override", "BLOCK_Q=8"], OVERRIDE + "unknown launch config key 'BLOCK_Q'; known: BLOCK_B, BLOCK_H, "
                                             "BLOCK_K, PIECES, W_RESIDENT, num_warps, num_stages, maxnreg, "
                                             "DOT_FP32, PRECISION"),
    (["--override", "STRATEGY=split"], OVERRIDE + "STRATEGY: use --strategy"),
    (["--override", "PIECES=0"], OVERRIDE + "PIECES: expected a positive integer, got '0'"),
    (["--override", "num_stages=0"], OVERRIDE + "num_stages: expected an integer from 1 to 8, got '0'"),
    (["--override", "maxnreg=256"], OVERRIDE + "maxnreg: expected an integer from 16 to 255, got '256'"),
    (["--override", "=8"], OVERRIDE + "unknown launch config key ''"),
    (["--override", "num_warps=abc"], OVERRIDE + "num_warps: expected a power of two up to 32, got 'abc'"),
    (["--override", "num_warps=3"], OVERRIDE + "num_warps: expected a power of two up to 32, got '3'"),
    (["--override", "num_warps=0"], OVERRIDE + "num_warps: expected a power of two up to 32, got '0'"),
    (["--override", "num_warps=64"], OVERRIDE + "num_warps: expected a power of two up to 32, got '64'"),
    (["--override", "num_warps="], OVERRIDE + "num_warps: expected a power of two up to 32, got ''"),
    (["--override", "BLOCK_K=0"], OVERRIDE + "BLOCK_K: expected a power of two, got '0'"),
    (["--override", "BLOCK_H=-16"], OVERRIDE + "BLOCK_H: expected a power of two, got '-16'"),
    (["--override", "BLOCK_B=24"], OVERRIDE + "BLOCK_B: expected a power of two, got '24'"),
    (["--override", "BLOCK_B=True"], OVERRIDE + "BLOCK_B: expected a power of two, got 'True'"),
    (["--override", "W_RESIDENT=1"], OVERRIDE + "W_RESIDENT: expected True or False, got '1'"),
    (["--override", "DOT_FP32=yes"], OVERRIDE + "DOT_FP32: expected True or False, got 'yes'"),
    (["--override", "PRECISION=fp64"], OVERRIDE + "PRECISION: expected one of "),
    (["--arch", "70"], "argument --arch: invalid choice: 70"),
    (["--arch", "sm_90"], "argument --arch: invalid int value: 'sm_90'"),
    (["--flags", "some"], "argument --flags: invalid choice: 'some'"),
    (["--dtype", "fp64"], "argument --dtype: invalid choice: 'fp64'"),
    (["--cell", "transformer"], "argument --cell: invalid choice: 'transformer'"),
    (["--strategy", "persistent"], "argument --strategy: invalid choice: 'persistent'"),
    (["--strategy"], "argument --strategy: expected one argument"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_cli_rejects_bad_option(capsys, no_compile, argv, message):
    assert usage_error(capsys, *SMALL, *argv).startswith(message)


@pytest.mark.parametrize("override", [["W_RESIDENT=True"], ["BLOCK_H=16"], ["BLOCK_K=16", "num_warps=8"]])
def test_cli_rejects_an_override_the_grid_cannot_launch(capsys, no_compile, override):
    """W_RESIDENT needs all of the W slice in PIECES tiles of BLOCK_K (split streams it at H = 2048: one
    tile of 32), and rows needs H <= BLOCK_H (Elman at H = 32 gets a resident W_hh: its config sets
    BLOCK_H = BLOCK_K = 32; BLOCK_H = 16 is too narrow for it and BLOCK_K = 16 too short)."""
    argv = [a for o in override for a in ("--override", o)]
    message = usage_error(capsys, *SMALL, *argv)
    assert message.startswith(f"--override {' '.join(override)}: W_RESIDENT needs PIECES * BLOCK_K >= ")


def test_cli_rejects_an_unwritable_json_path_before_compiling(tmp_path, monkeypatch, capsys, no_compile):
    monkeypatch.setattr(inspection, "plan", lambda *a, **k: pytest.fail("enumerated before the path check"))
    assert usage_error(capsys, *SMALL, "--json", str(tmp_path)) == f"--json {tmp_path}: is a directory"
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "out.json"  # its parent is a file
    assert usage_error(capsys, *SMALL, "--json", str(bad)).startswith(f"--json {bad}: cannot create {bad.parent}: ")



def test_cli_valid_options_reach_the_compile(tmp_path, monkeypatch, capsys):
    """A repeated --arch/--cell/--dtype counts once; overrides reach every compile job."""
    seen = []

    def run_jobs(jobs, processes):
        seen.append((jobs, processes))
        return [dict(ok=True, regs=64, spills=0, shared=0) for _ in jobs]

    monkeypatch.setattr(inspection, "run_jobs", run_jobs)
    from fastrnn.__main__ import main
    out = tmp_path / "new" / "out.json"  # a missing directory is created
    assert main(["inspect", *SMALL, "--arch", "90", "--cell", "elman", "--dtype", "fp32", "--jobs", "1",
                 "--override", "num_warps=8", "--override", "W_RESIDENT=False", "--json", str(out)]) == 0
    (jobs, processes), = seen
    assert processes == 1 and {dict(job[6])["num_warps"] for job in jobs} == {8}
    assert {job[2] for job in jobs} == {90}
    assert "16 launches x 1 archs" in capsys.readouterr().out
    assert sum(r["launches"] for r in json.loads(out.read_text())["kernels"]) == 16


@pytest.mark.parametrize("argv, launches, strategies", [
    ([], 16, {"rows", "split"}),  # auto: the heuristic's choice at each point (split from H = 128)
    (["--strategy", "auto"], 16, {"rows", "split"}),
    (["--strategy", "stepwise"], 16, {"split"}),  # the split kernel
    (["--strategy", "rows", "--strategy", "split", "--strategy", "rows"], 32, {"rows", "split"}),
    (["--strategy", "all"], 48, {"rows", "split"}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_cli_strategy_choice(monkeypatch, capsys, argv, launches, strategies):
    """--strategy forces a strategy at every point (repeated: once), 'all' each of them; the
    enumeration line and the summary count the kernels per strategy."""
    seen = []

    def run_jobs(jobs, processes):
        seen.extend(jobs)
        return [dict(ok=True, regs=64, spills=0, shared=0) for _ in jobs]

    monkeypatch.setattr(inspection, "run_jobs", run_jobs)
    from fastrnn.__main__ import main
    assert main(["inspect", *SMALL, *argv]) == 0
    out = capsys.readouterr().out
    counts = Counter(_constexprs(job)["STRATEGY"] for job in seen)
    assert set(counts) == strategies
    assert f"{launches} launches x 1 archs -> {len(seen)} distinct kernels ({_per_strategy(counts)}; " in out
    assert f"\n{len(seen)} kernels ({_per_strategy(counts)}), 0 failed, " in out


def test_estimate_flag_runs_the_estimate(monkeypatch):
    """`python -m fastrnn inspect --estimate --shape ...` hands the parsed options to fastrnn/estimate.py."""
    from fastrnn import estimate
    parser = argparse.ArgumentParser()
    inspection.add_arguments(parser)
    args = parser.parse_args(["--estimate", "--shape", "gru:B=16:H=768:bf16", "--json", "x.json"])
    seen = []
    monkeypatch.setattr(estimate, "main", lambda a: seen.append(a) or 0)
    assert inspection.main(args) == 0
    (got,), = [seen]
    assert got.shapes[0].cell == "gru" and got.json == "x.json"
