"""Tests of fastrnn/estimate.py: the trip rule on hand-built loop trees, the model's arithmetic, the
shape syntax, and one real sm_90 compile (forward inference at shape a)."""
import argparse
import json
from types import SimpleNamespace

import pytest

from fastrnn import estimate, sass

HMMA = "HMMA.16816.F32.BF16"  # 16 x 8 x 16 = 2048 multiply-adds per warp
# split LSTM forward at B=16, H=768, bf16: 48 programs of BLOCK_H 16, 4 warps, W resident
SPLIT = estimate.Tiling("fwd", False, "split", G=4, H=768, R=768, BLOCK_B=16, BLOCK_H=16, BLOCK_K=256, warps=4,
                        resident=True, fp32_dot=False, programs=48, substeps=1)
# one streamed dot [16, 32] x [32, 64] per iteration: 32768 multiply-adds, 8192 per warp = 4 HMMA
STREAMED = SPLIT._replace(BLOCK_K=32, resident=False)


class Code:
    """Instructions at consecutive offsets (16 bytes apart), for hand-built loops."""
    def __init__(self):
        self.offset = 0

    def __call__(self, *opcodes):
        out = []
        for op in opcodes:
            out.append(sass.Instr(self.offset, op, op, None))
            self.offset += 16
        return out


def loop(code, own, children=(), after=()):
    """A Loop of the `own` instructions, its `children`, then `after` and its backward branch (the
    rule reads the tree, not the offsets, which only need to be distinct)."""
    instrs = code(*own, *after, "BRA")
    return sass.Loop(instrs[0].offset, instrs[-1].offset, list(children), instrs)


def spin(code):
    return loop(code, ["LDG.E.STRONG.GPU", "ATOMG.E.EXCH.STRONG.GPU"])


def test_split_tile_is_straight_code_and_the_spin_is_no_work():
    # a split program's one tile is no loop (kernels/common.py own_tiles): its code is the step's own
    code = Code()
    step = loop(code, ["IADD3"] * 10 + [HMMA] * 96 + ["FADD"] * 3, [spin(code)], ["MEMBAR.ALL.GPU"])
    assert estimate.trip_counts(step, SPLIT) == {step.children[0].start: 0}
    counts = estimate.per_step(step, SPLIT)
    assert counts["total"] == 12 + 99
    assert counts["mma"] == 96 and counts["atom"] == 0  # the spin loop's atomic is the barrier term
    # two sub-steps: the time loop's own code, the tile's included, counts twice (an upper bound)
    assert estimate.per_step(step, SPLIT._replace(substeps=2))["total"] == 2 * (12 + 99)


def test_rows_walks_its_hidden_tile_loop():
    code = Code()
    tile = loop(code, [HMMA] * 96 + ["FADD"] * 3)
    step = loop(code, ["IADD3"] * 10, [tile])
    rows = SPLIT._replace(strategy="rows", programs=1)
    assert estimate.trip_counts(step, rows) == {tile.start: 768 // 16}
    assert estimate.per_step(step, rows)["total"] == 11 + 48 * 100


def test_streamed_loop_trips_divide_by_the_unroll_the_mma_count_shows():
    for unroll in (1, 2, 3):
        code = Code()
        k_loop = loop(code, [HMMA] * (4 * unroll) + ["LDG.E.128"] * 2)
        step = loop(code, ["IADD3", "MUFU.EX2"], [k_loop, spin(code)])
        trips = estimate.trip_counts(step, STREAMED)
        assert trips[k_loop.start] == (768 // 32) // unroll  # 24 K tiles; 24 // 3 = 8 trips (no remainder)
    # rows: the tile loop around it walks all H tiles
    code = Code()
    tile = loop(code, ["MUFU.EX2"], [loop(code, [HMMA] * 4)])
    assert estimate.trip_counts(loop(code, ["IADD3"], [tile]), STREAMED._replace(strategy="rows"))[tile.start] == 48


def test_hgmma_and_fp32_ffma_count_multiply_adds():
    code = Code()
    # [64, 32] x [32, 128] per iteration over 4 warps = 65536 per warp = 2 HGMMA.64x128x16 (a warpgroup each)
    k = STREAMED._replace(BLOCK_B=64, BLOCK_H=32)
    assert estimate._stream_trips(loop(code, ["HGMMA.64x128x16.F32.BF16"] * 2), k, 1024, 4) == 32
    # fp32: one FFMA is 32 multiply-adds; [64, 32] x [32, 64] over 4 warps = 1024 FFMA
    k = STREAMED._replace(BLOCK_B=64, fp32_dot=True)
    assert estimate._stream_trips(loop(code, ["FFMA"] * 1024), k, 256, 4) == 8
    with pytest.raises(estimate.Unmatched, match="not a multiple"):
        estimate._stream_trips(loop(code, ["FFMA"] * 1000), k, 256, 4)
    with pytest.raises(estimate.Unmatched, match="one-row dot"):
        estimate._stream_trips(loop(code, ["FFMA"] * 8), k._replace(BLOCK_B=1), 256, 4)
    with pytest.raises(estimate.Unmatched, match="IMMA"):
        estimate._stream_trips(loop(code, ["IMMA.16832.S8.S8"]), STREAMED, 256, 4)


def test_backward_sum_of_shares_main_loop_and_remainder():
    k = SPLIT._replace(pass_="bwd", warps=8)  # one share tile [16, 16] over 256 threads: 1 FADD per iteration
    code = Code()
    main = loop(code, ["LDG.E.STRONG.GPU", "FADD"] * 4)
    rest = loop(code, ["LDG.E.STRONG.GPU", "FADD"])
    step = loop(code, ["IADD3"] + [HMMA] * 48, [main, rest, spin(code)])
    trips = estimate.trip_counts(step, k._replace(programs=50))
    assert (trips[main.start], trips[rest.start]) == (12, 2)
    # one loop only (not unrolled, or its remainder straight code): all programs go to it
    code = Code()
    alone = loop(code, ["FADD"] * 4)
    step = loop(code, ["IADD3", HMMA], [alone, spin(code)])
    assert estimate.trip_counts(step, k._replace(programs=50))[alone.start] == 12
    # streamed W: the share sum, then the W loop
    code = Code()
    alone, k_loop = loop(code, ["FADD"] * 4), loop(code, [HMMA] * 4)
    trips = estimate.trip_counts(loop(code, ["IADD3"], [alone, k_loop, spin(code)]),
                                 k._replace(programs=50, resident=False, BLOCK_K=32, warps=4))
    assert (trips[alone.start], trips[k_loop.start]) == (25, 24)  # [16, 16] over 128 threads: 2 FADDs


def test_unexpected_structure_is_unmatched_not_guessed():
    code = Code()
    with pytest.raises(estimate.Unmatched, match="spin"):  # split without its barrier
        estimate.trip_counts(loop(code, [HMMA] * 96), SPLIT)
    with pytest.raises(estimate.Unmatched, match="2 hidden-tile loops"):  # rows: one tile loop expected
        estimate.trip_counts(loop(code, ["IADD3"], [loop(code, [HMMA]), loop(code, ["FADD"])]),
                             SPLIT._replace(strategy="rows"))
    with pytest.raises(estimate.Unmatched, match="holds 1 loops"):  # resident W: no streamed loop expected
        estimate.trip_counts(loop(code, ["IADD3"], [loop(code, [HMMA]), spin(code)]), SPLIT)


def test_stepwise_counts_the_split_binary():
    # stepwise launches the split kernel a sub-step at a time with its barrier off: the same time
    # loop and spin (0 trips), the barrier's arrival counted though not run (an upper bound)
    text = "\n".join(f"        /*{16 * n:04x}*/ {op} ;" for n, op in enumerate(
        ["S2R R0, SR_TID.X", f"{HMMA} R8, R12, R16, R8", "LDG.E.STRONG.GPU R4, [R2]", "CCTL.IVALL",
         "@P1 BRA 0x20", "STG.E [R2], R8", "@P0 BRA 0x10", "EXIT"]))
    step = estimate.step_loop(sass.parse(text))
    assert [len(step.own), len(step.children)] == [3, 1]  # HMMA, STG and the loop's branch; the spin
    for strategy in ("split", "stepwise"):
        assert estimate.per_step(step, SPLIT._replace(strategy=strategy))["total"] == 3


def test_issue_bound_and_model():
    # 4 warps on 4 schedulers: one instruction per cycle each; 8 warps take twice as long; 2 warps no less
    assert estimate.issue_us(1755, 4) == pytest.approx(1.0)
    assert estimate.issue_us(1755, 8) == pytest.approx(2.0)
    assert estimate.issue_us(1755, 2) == pytest.approx(1.0)
    assert estimate.issue_us(1755, 4, per_sm=2) == pytest.approx(2.0)
    assert estimate.model_us(1.0, 2, 0, 3) == pytest.approx(1.0 + 2 * estimate.BARRIER_US + 3 * estimate.L2_TRIP_US)
    assert estimate.model_us(0.0, 0, 1, 0) == estimate.LAUNCH_US
    assert 0.5 <= estimate.BARRIER_US <= 1.0 and 250 <= estimate.L2_TRIP_US * 1755 <= 500


def test_step_bytes():
    # resident W: only the state (h written once, read by 48 programs) and the output row
    weights, state, out = estimate.step_bytes(SPLIT, 1, 16, 2, save=False)
    assert (weights, state, out) == (0, 49 * 16 * 768 * 2, 16 * 768 * 2)
    # streamed: every program reads its slice, G x BLOCK_H x R, per batch tile
    weights, _, _ = estimate.step_bytes(STREAMED, 2, 32, 2, save=False)
    assert weights == 2 * 4 * 48 * 16 * 768 * 2
    # backward: each program's fp32 share of dh [32, R] written and read; dG written
    _, state, out = estimate.step_bytes(SPLIT._replace(pass_="bwd"), 2, 32, 2, save=False)
    assert (state, out) == (2 * 48 * 32 * 768 * 4, 32 * 4 * 768 * 4)


def test_parse_shape():
    s = estimate.parse_shape("lstm:B=16:H=768:bf16:P=384:S=rows")
    assert (s.cell, s.B, s.H, s.dtype, s.strategy) == ("lstm-proj", 16, 768, "bf16", "rows")
    assert estimate.parse_shape("elman:B=1:H=32:fp32", "e").name == "e"
    for bad, why in (("lstm:B=16:bf16", "expected"), ("rnn:B=1:H=8:fp32", "cell"), ("lstm:B=1:H=8:fp64", "dtype"),
                     ("lstm:B=1:H=8:fp32:P=3", "H / 2"), ("lstm:B=1:H=8:fp32:X=1", "unknown"),
                     ("lstm:B=1:H=8:fp32:S=fast", "strategy")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            estimate.parse_shape(bad)


def test_main_prints_the_phrase_and_writes_json(tmp_path, capsys, monkeypatch):
    row = dict(shape="a", spec="lstm:B=16:H=768:bf16", strategy="split", config="split", programs=48,
               co_resident=True, instr_per_warp=None, issue_us=None, bytes=1024, bw_us=0.1, barriers=1,
               l2_trips=1, model_us=None, na="why")
    monkeypatch.setattr(estimate, "table", lambda shapes, processes: [dict(row, **{"pass": "bwd"})])
    path = tmp_path / "e.json"
    assert estimate.main(SimpleNamespace(shapes=[], json=str(path), jobs=1)) == 0
    out = capsys.readouterr().out
    assert "a static bound and a model, not a timing" in out and "n/a a bwd: why" in out
    assert json.loads(path.read_text())["rows"][0]["na"] == "why"


def test_real_estimate_shape_a_forward_inference():
    shape = estimate.parse_shape(estimate.SHAPES["a"], "a")
    row, = estimate.table([shape], passes=("fwd-infer",), processes=1)
    assert "na" not in row, row.get("na")
    assert row["strategy"] == "split" and row["programs"] == 48 and row["co_resident"] is True
    assert row["instr_per_warp"] > 0 and row["classes"]["mma"] > 0
    assert row["barriers"] == row["l2_trips"] == 1
    assert row["model_us"] > row["issue_us"] > 0
    for key in ("config", "regs", "shared", "per_sm", "bytes", "bw_us"):
        assert row[key] is not None
