"""`python -m fastrnn inspect`: the grid, the dedupe into compile jobs, and one real sm_90 compile.

Runs under the suite's TRITON_INTERPRET=1: the inspection loads its own compilable kernels.
"""
import argparse
import json
import re

import pytest
import torch

from fastrnn import inspection
from fastrnn.kernels.config import launch_config


def _constexprs(job):
    names = [n for n, _ in job[3]]
    return {names[path[0]]: v for path, v in job[4]}


def _case(**kw):
    base = dict(cell="elman", pass_="fwd", dtype="fp32", B=16, H=32, train=False, reverse=True,
                lengths=True, relu=False, tf32=False)
    return inspection.Case(**{**base, **kw})


def test_grid_covers_the_issue_grid():
    cases = inspection.grid()
    assert {c.H for c in cases} == {32, 64, 128, 256, 512, 1024, 2048}
    assert {c.B for c in cases} == {1, 16, 64, 256}
    assert {c.dtype for c in cases} == {"fp32", "fp16", "bf16"}
    assert {(c.cell, c.pass_, c.train) for c in cases} == {
        ("elman", "fwd", False), ("elman", "bwd", True),
        ("lstm", "fwd", False), ("lstm", "fwd", True), ("lstm", "bwd", True),
        ("lstm-proj", "fwd", False), ("lstm-proj", "fwd", True), ("lstm-proj", "bwd", True)}
    assert len(set(cases)) == len(cases)
    everything = inspection.grid(quick=True, flags="all")
    assert {(c.reverse, c.lengths) for c in everything} == {(r, n) for r in (0, 1) for n in (0, 1)}
    assert {c.relu for c in everything} == {False, True} and {c.tf32 for c in everything} == {False, True}


@pytest.mark.parametrize("case", [
    _case(),
    _case(dtype="bf16", H=128, B=64),
    _case(cell="lstm", dtype="fp16", H=64, B=1, train=True),
    _case(cell="lstm-proj", pass_="bwd", dtype="bf16", H=256, B=256, train=True),
    _case(cell="elman", pass_="bwd", dtype="fp32", H=2048, B=64, train=True, tf32=True),
], ids=lambda c: f"{c.cell}-{c.pass_}-H{c.H}-B{c.B}-{c.dtype}{'-tf32' if c.tf32 else ''}")
def test_job_is_the_gpu_launch_config(case):
    """The recorded launch carries exactly launch_config(..., 'cuda') and the case's flags."""
    job = inspection.specialize(case, 90)
    c = _constexprs(job)
    cell = "elman" if case.cell == "elman" else "lstm"
    R = case.H // 2 if case.cell == "lstm-proj" else case.H
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = case.tf32
    try:
        cfg = launch_config(cell, case.pass_, case.B, case.H, R, inspection.DTYPES[case.dtype], "cuda",
                            save=inspection.saves(case))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    for key in ("BLOCK_B", "BLOCK_H", "BLOCK_K", "DOT_FP32", "PRECISION"):
        assert c[key] == cfg[key], key
    assert c.get("W_RESIDENT", False) == cfg["W_RESIDENT"]
    assert dict(job[6])["num_warps"] == cfg["num_warps"]
    assert c["REVERSE"] is True and c["HAS_LENGTHS"] is True
    if cell == "lstm":
        assert c["PROJ"] == (case.cell == "lstm-proj")
        assert ("w_hr_ptr" in c) == (case.cell == "lstm") and c.get("w_hr_ptr") is None  # None pointer
        if case.pass_ == "fwd":
            assert c["SAVE"] == case.train
    assert (c.get("B") == 1) == (case.B == 1)  # Triton specializes an int argument equal to 1
    signature = dict(job[3])
    ptr = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16"}[case.dtype]
    assert signature["w_hh_ptr"] == ptr and signature["len_ptr"] == "*i32"


def test_dedupe_merges_only_identical_kernels():
    cases = [_case(pass_="bwd", train=True, H=H, B=B) for H in (128, 2048) for B in (1, 64, 256)]
    cases += [_case(dtype="bf16", H=H, B=16) for H in (32, 64, 128, 256, 2048)]
    jobs = inspection.plan(cases, archs=(80, 90))
    groups = sorted(sorted((c.pass_, c.dtype, c.H, c.B) for c in group) for group in jobs.values())
    bwd = [[("bwd", "fp32", H, B) for H in (128, 2048)] for B in (1,)]
    bwd += [sorted(("bwd", "fp32", H, B) for H in (128, 2048) for B in (64, 256))]
    fwd = [[("fwd", "bf16", H, 16)] for H in (32, 64)]  # resident W_hh (<= 16 KiB): a tile per H
    fwd += [[("fwd", "bf16", H, 16) for H in (128, 256, 2048)]]  # streamed: one kernel
    assert groups == sorted(2 * (bwd + fwd))  # once per architecture
    assert {job[2] for job in jobs} == {80, 90}


def test_parse_res_usage():
    text = ("\nResource usage:\n Common:\n  GLOBAL:0\n Function lstm_fwd_kernel:\n"
            "  REG:168 STACK:8 SHARED:1024 LOCAL:4 CONSTANT[0]:608 TEXTURE:0 SURFACE:0 SAMPLER:0\n")
    res = inspection.parse_res_usage(text)["lstm_fwd_kernel"]
    assert (res["REG"], res["STACK"], res["SHARED"], res["LOCAL"], res["CONSTANT"]) == (168, 8, 1024, 4, 608)


def test_compile_one_config_for_sm90():
    job = inspection.specialize(_case(B=16, H=32), 90)
    res, = inspection.run_jobs([job], 1)
    assert 16 <= res["regs"] <= 255
    assert res["stack"] == res["local"] == res["spills"] == 0
    assert res["dynamic_shared"] > 0  # the tl.dot operands are staged through shared memory
    assert res["shared"] == res["static_shared"] + res["dynamic_shared"] <= inspection.SHARED_LIMIT[90]
    assert res["ok"] is True


def _args(tmp_path):
    parser = argparse.ArgumentParser()
    inspection.add_arguments(parser)
    argv = ["--quick", "--cell", "elman", "--dtype", "fp32", "--arch", "90", "--jobs", "1",
            "--json", str(tmp_path / "out.json")]
    return parser.parse_args(argv)


@pytest.mark.parametrize("verdict", ["ok", "spill", "shared", "error"])
def test_main_table_and_exit_status(tmp_path, monkeypatch, capsys, verdict):
    def fake_compile(job):  # stands in for a compile; the rest of main runs for real
        if verdict == "error":
            raise RuntimeError("ptxas fatal: boom")
        limit = inspection.SHARED_LIMIT[job[2]]
        spill = 16 if verdict == "spill" and job[1] == "elman_bwd_kernel" else 0
        shared = limit + 1 if verdict == "shared" and job[1] == "elman_fwd_kernel" else 1024
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
    if verdict == "ok":
        assert not failed and "FAIL" not in out
    else:
        assert failed and out.count("\nFAIL ") == len(failed)
        reason = {"spill": "spills 16 B stack", "shared": "> limit 232448 B", "error": "ptxas fatal"}[verdict]
        assert reason in out


def test_override_tries_a_heuristic():
    assert inspection._override("num_warps=8") == ("num_warps", 8)
    assert inspection._override("W_RESIDENT=False") == ("W_RESIDENT", False)
    assert inspection._override("PRECISION=tf32") == ("PRECISION", "tf32")
    job = inspection.specialize(_case(cell="lstm", H=128, B=64), 80, override={"num_warps": 8, "BLOCK_K": 32})
    assert dict(job[6])["num_warps"] == 8 and _constexprs(job)["BLOCK_K"] == 32
    with pytest.raises(ValueError, match="unknown launch config keys"):
        inspection.specialize(_case(), 80, override={"BLOCK_Q": 8})
