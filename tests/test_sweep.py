"""`python -m fastrnn sweep`: the kinds it covers and how it picks a setting, with compiles faked
(a real sweep takes minutes of ptxas; inspect's own tests compile for real)."""
import argparse

import pytest

from fastrnn import inspection, sweep

import outcomes


def _settings(job):
    """(num_warps, BLOCK_K, BLOCK_H) of a compile job (constexprs are keyed by argument index)."""
    constexprs = inspection.constexprs(job)
    return dict(job[6])["num_warps"], constexprs["BLOCK_K"], constexprs["BLOCK_H"]


def _run(monkeypatch, capsys, clean):
    """Run `sweep --cell elman` where a compile is clean iff clean(kernel name, settings)."""
    seen = []

    def fake_run_jobs(jobs, processes):
        seen.extend(jobs)
        return [dict(ok=clean(job[1], _settings(job))) for job in jobs]

    monkeypatch.setattr(inspection, "run_jobs", fake_run_jobs)
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    status = sweep.main(parser.parse_args(["--cell", "elman", "--jobs", "1"]))
    return status, capsys.readouterr().out, seen


def test_kinds_cover_every_flag_and_batch_class():
    kinds = dict(sweep.kinds(("lstm",)))
    cases = kinds[("lstm", "fwd", False, "fp32", 16, True)]
    assert {(c.reverse, c.lengths, c.tf32) for c in cases} == {(r, n, t) for r in (0, 1) for n in (0, 1)
                                                                for t in (0, 1)}
    assert {c.B for c in cases} == {1, 16} and all(c.train for c in cases)
    assert {c.B for c in kinds[("lstm", "bwd", False, "16-bit", 32, False)]} == {64}
    assert len(kinds) == 3 * 2 * 2  # (fwd, fwd saving, bwd) x (fp32, 16-bit) x (BLOCK_B 16, 32)
    assert len(sweep.kinds(("elman",))) == 2 * 2 * 2  # the Elman forward saves nothing
    assert {key[:2] for key, _ in sweep.kinds(("gru",))} == {("gru", "fwd"), ("gru", "bwd")}
    assert {c.strategy for cases in kinds.values() for c in cases} == {"rows"}  # TUNED is rows' table


def test_first_clean_setting_becomes_a_tuned_entry(monkeypatch, capsys):
    # the Elman forward spills unless it gets 8 warps; everything else is clean as it is
    status, out, seen = _run(monkeypatch, capsys,
                             lambda name, s: name != "forward_kernel" or s[0] == 8)
    assert status == 0
    assert "('elman', 'fwd', False, 'fp32', 16, False): dict(num_warps=8, BLOCK_K=16)," in out
    assert "('elman', 'bwd'" not in out.split("TUNED = {")[1]
    assert {job[2] for job in seen} == {80, 90}
    base_warps = {_settings(j)[0] for j in seen if j[1] == "backward_kernel"}
    assert base_warps == {4}  # a kind clean at the base is compiled once, at the base
    assert {inspection.constexprs(j)["STRATEGY"] for j in seen} == {"rows"}  # H = 256 would be split


def test_a_kind_with_no_clean_setting_fails_the_run(monkeypatch, capsys):
    status, out, _ = _run(monkeypatch, capsys, lambda name, s: name != "backward_kernel")
    assert status == 1 and "none clean" in out and "4 kind(s) with no clean candidate" in out


def test_candidates_are_compiled_as_given_not_as_todays_table(monkeypatch, capsys):
    """A candidate without maxnreg or BLOCK_H gets the heuristic's, whatever TUNED says today (a
    maxnreg left by TUNED once made a spilling candidate look clean). The Elman backward is also
    compiled at H = 32, where its default BLOCK_H is narrower."""
    key = ("elman", "bwd", False, "fp32", 16, False)
    assert {c.H for c in dict(sweep.kinds(("elman",)))[key]} == {32, 256}
    monkeypatch.setitem(inspection.jit_kernels().config.TUNED, key, dict(num_warps=2, BLOCK_H=16, maxnreg=255))
    _, _, seen = _run(monkeypatch, capsys, lambda name, s: True)
    bwd = [j for j in seen if j[1] == "backward_kernel" and dict(j[6])["num_warps"] == 4]
    assert bwd and all(dict(j[6])["maxnreg"] is None for j in bwd)
    assert {_settings(j)[2] for j in bwd} == {32, 64}  # H = 32 and H = 256


@pytest.mark.parametrize("candidate", sweep.CANDIDATES)
def test_candidates_are_launch_settings(candidate):
    assert set(sweep.override(candidate)) <= {"num_warps", "BLOCK_K", "BLOCK_H", "maxnreg"}


# --- misuse: exit 2 with argparse's usage and one error line, before any compile ----------------
@pytest.fixture
def no_compile(monkeypatch):
    def run_jobs(jobs, processes):
        raise AssertionError("sweep compiled kernels before reporting the misuse")
    monkeypatch.setattr(inspection, "run_jobs", run_jobs)


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "argument --jobs: expected a positive integer, got '0'"),
    (["--jobs", "-1"], "argument --jobs: expected a positive integer, got '-1'"),
    (["--jobs", "2.5"], "argument --jobs: expected a positive integer, got '2.5'"),
    (["--cell", "transformer"], "argument --cell: invalid choice: 'transformer'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_cli_rejects_bad_option(capsys, no_compile, argv, message):
    assert outcomes.usage_error(capsys, "sweep", "--cell", "elman", *argv).startswith(message)


def test_a_repeated_cell_is_swept_once(monkeypatch, capsys):
    monkeypatch.setattr(inspection, "run_jobs", lambda jobs, processes: [dict(ok=True) for _ in jobs])
    from fastrnn.__main__ import main
    assert main(["sweep", "--cell", "elman", "--cell", "elman", "--jobs", "1"]) == 0
    verdicts = [line for line in capsys.readouterr().out.splitlines() if line.startswith("('elman'")]
    assert len(verdicts) == len(set(verdicts)) == len(sweep.kinds(("elman",)))
