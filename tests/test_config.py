"""kernels/config.py: the launch heuristic, its overrides and the co-residency rule."""
from types import SimpleNamespace

import pytest
import torch

from fastrnn.kernels.config import ENV, KEYS, SPLIT_MIN_H, TUNED, launch_config, programs_per_sm

F32, BF16 = torch.float32, torch.bfloat16
ROWS = dict(STRATEGY="rows")


@pytest.fixture(autouse=True)
def _no_strategy_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def test_rows_residency_only_when_it_fits():
    def resident(pass_, H, dtype, **kw):
        return launch_config("lstm", pass_, 8, H, H, dtype, "cuda", override=ROWS, **kw)["W_RESIDENT"]
    assert resident("fwd", 32, BF16) and resident("fwd", 16, F32)
    assert not resident("fwd", 64, BF16) and not resident("fwd", 32, F32) and not resident("bwd", 16, F32)
    with pytest.raises(ValueError, match="W_RESIDENT needs"):
        launch_config("lstm", "fwd", 8, 64, 64, F32, "cuda", override=dict(ROWS, W_RESIDENT=True, BLOCK_H=32))
    with pytest.raises(ValueError, match="W_RESIDENT needs"):  # pieces that do not cover R
        launch_config("lstm", "fwd", 8, 300, 300, BF16, "cuda", override=dict(W_RESIDENT=True, PIECES=1))


def test_tuned_settings_apply_to_rows_where_listed():
    """TUNED only replaces launch keys, and tells training from inference."""
    assert all(set(settings) <= set(KEYS) - {"W_RESIDENT", "STRATEGY"} for settings in TUNED.values())
    for (cell, pass_, proj, kind, bb, save), settings in TUNED.items():
        B, H = bb, 256  # streamed weights, the key's batch tile
        tuned = launch_config(cell, pass_, B, H, H // 2 if proj else H, F32 if kind == "fp32" else BF16, "cuda",
                              override=ROWS, save=save)
        assert all(tuned[k] == v for k, v in settings.items())
    resident = launch_config("lstm", "fwd", 8, 32, 32, BF16, "cuda", save=True)
    assert resident["W_RESIDENT"] and resident["num_warps"] == 4  # TUNED is for streamed weights


@pytest.mark.parametrize("B,H,dtype,programs", [
    (16, 768, BF16, 48),   # (a) of the issue: one batch tile, 48 programs of 16 units
    (64, 256, F32, 64),    # (b): fp32 products on the CUDA cores: 16-row tiles, 4 of them
    (256, 1024, BF16, 128),  # (c): 4 batch tiles of 64 x 32 tiles of 32 units
    (1, 512, F32, 128),    # (d): one row, CUDA-core products, 4 units a program
])
def test_heuristic_splits_the_issue_shapes_across_the_gpu(B, H, dtype, programs):
    cfg = launch_config("lstm", "fwd", B, H, H, dtype, "cuda")
    assert cfg["STRATEGY"] == "split" and cfg["FALLBACK"]
    grid = -(-H // cfg["BLOCK_H"]) * -(-B // cfg["BLOCK_B"])
    assert grid == programs
    assert cfg["BLOCK_B"] == (1 if B == 1 else 16 if dtype == F32 else min(64, max(16, B)))


def test_split_keeps_the_w_slice_on_chip_at_shape_a():
    for pass_ in ("fwd", "bwd"):  # the same rows of W_hh: G * BLOCK_H x R
        cfg = launch_config("lstm", pass_, 16, 768, 768, BF16, "cuda")
        assert cfg["W_RESIDENT"] and cfg["PIECES"] * cfg["BLOCK_K"] == 768  # 256-wide pieces, no padding


@pytest.mark.parametrize("pass_", ["fwd", "bwd"])
@pytest.mark.parametrize("B,H,dtype", [(16, 768, BF16), (64, 256, F32), (256, 1024, BF16), (1, 512, F32),
                                       (64, 2048, F32)])
def test_split_states_every_register_to_ptxas(pass_, B, H, dtype):
    """Without a budget ptxas aims at occupancy and keeps some of the time loop on the stack; a
    split grid runs about one program per SM. rows keeps ptxas's own budget."""
    for strategy in ("split", "stepwise"):
        assert launch_config("lstm", pass_, B, H, H, dtype, "cuda", override={"STRATEGY": strategy})["maxnreg"] == 255
    assert launch_config("lstm", pass_, B, H, H, dtype, "cuda", override={"STRATEGY": "rows"})["maxnreg"] is None


@pytest.mark.parametrize("pass_", ["fwd", "bwd"])
def test_streamed_fma_slices_skip_the_prefetch(pass_):
    """fp32 streams its W slice into an FMA dot: no prefetch buffers (they spill), and 16-row tiles
    once the slice is wider than 64 columns (at (b) it is 4 gates x 16 units; at H = 2048, x 64)."""
    for H, block_k in ((256, 32), (2048, 16)):
        cfg = launch_config("lstm", pass_, 64, H, H, F32, "cuda")
        assert not cfg["W_RESIDENT"] and (cfg["BLOCK_K"], cfg["num_stages"]) == (block_k, 1)


def test_wide_accumulator_tiles_run_8_warps():
    """(c)'s [64, 4 x 32] fp32 accumulators spill in training at 4 warps (inspect)."""
    for pass_ in ("fwd", "bwd"):
        assert launch_config("lstm", pass_, 256, 1024, 1024, BF16, "cuda")["num_warps"] == 8
        assert launch_config("lstm", pass_, 16, 768, 768, BF16, "cuda")["num_warps"] == 4  # (a): [16, 4 x 16]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_accumulator_tiles_stop_at_8192(cell):
    """A [64, 4 x 64] tile (B = 256, H = 2048, 16-bit) spills in training however it is launched;
    the heuristic takes [64, 4 x 32] there, 256 programs, which outgrow an H100's 132 SMs (the launch
    then runs stepwise). Elman's one gate keeps 64 units."""
    for pass_ in ("fwd", "bwd"):
        cfg = launch_config(cell, pass_, 256, 2048, 2048, BF16, "cuda", save=pass_ == "fwd")
        assert (cfg["BLOCK_B"], cfg["BLOCK_H"], cfg["num_warps"]) == (64, 32, 8)
    assert launch_config("elman", "fwd", 256, 2048, 2048, BF16, "cuda")["BLOCK_H"] == 64


@pytest.mark.parametrize("cell,pass_,B,H,R,dtype,expect", [
    # a resident slice beside a 64-row tile: 128-wide pieces (the backward's [BLOCK_K, 64] product), 8 warps
    ("lstm", "bwd", 64, 512, 512, BF16, dict(W_RESIDENT=True, BLOCK_K=128, PIECES=4, num_warps=8)),
    ("lstm", "fwd", 64, 512, 512, BF16, dict(W_RESIDENT=True, BLOCK_K=256, PIECES=2, num_warps=8)),
    ("lstm", "fwd", 64, 1024, 512, BF16, dict(W_RESIDENT=True, BLOCK_K=128, PIECES=4, num_warps=8)),  # projected
    ("elman", "fwd", 256, 1024, 1024, BF16, dict(W_RESIDENT=False)),  # R > 512 beside 64 rows: streamed
    ("elman", "fwd", 16, 2048, 2048, BF16, dict(W_RESIDENT=True, PIECES=8, num_warps=8)),  # many pieces
    ("lstm", "bwd", 16, 1024, 512, BF16, dict(W_RESIDENT=True, num_warps=8)),  # projected backward
    ("lstm", "bwd", 16, 768, 768, BF16, dict(W_RESIDENT=True, PIECES=3, num_warps=4)),  # (a) unchanged
    ("elman", "fwd", 256, 256, 256, F32, dict(W_RESIDENT=False, BLOCK_H=32)),  # FMA slice 32 units wide
    ("elman", "fwd", 64, 256, 256, F32, dict(W_RESIDENT=True, BLOCK_H=16)),  # (e) unchanged
])
def test_split_rules_that_keep_ptxas_from_spilling(cell, pass_, B, H, R, dtype, expect):
    """Each rule of `_split` for a spill `inspect --flags all --strategy all` found."""
    cfg = launch_config(cell, pass_, B, H, R, dtype, "cuda")
    assert {k: cfg[k] for k in expect} == expect


def test_rows_below_split_min_h():
    assert launch_config("lstm", "fwd", 256, SPLIT_MIN_H // 2, SPLIT_MIN_H // 2, BF16, "cuda")["STRATEGY"] == "rows"


def test_interpreter_runs_the_twin_and_refuses_split_by_name(monkeypatch):
    assert launch_config("lstm", "fwd", 16, 768, 768, F32, "cpu")["STRATEGY"] == "stepwise"
    with pytest.raises(ValueError, match="'stepwise'"):
        launch_config("lstm", "fwd", 16, 768, 768, F32, "cpu", override=dict(STRATEGY="split"))
    monkeypatch.setenv(ENV, "split")
    with pytest.raises(ValueError, match="'stepwise'"):
        launch_config("elman", "fwd", 16, 8, 8, F32, "cpu")


def test_strategy_from_config_then_environment_then_heuristic(monkeypatch):
    def strategy(**kw):
        return launch_config("lstm", "fwd", 16, 768, 768, BF16, "cuda", **kw)["STRATEGY"]
    assert strategy() == "split"
    monkeypatch.setenv(ENV, "rows")  # read at every call
    assert strategy() == "rows"
    assert strategy(override=dict(STRATEGY="stepwise")) == "stepwise"
    assert not launch_config("lstm", "fwd", 16, 768, 768, BF16, "cuda", override=dict(STRATEGY="split"))["FALLBACK"]
    monkeypatch.setenv(ENV, "fastest")
    with pytest.raises(ValueError, match="rows, split, stepwise"):
        strategy()


def test_programs_per_sm_takes_the_tightest_limit():
    h100 = SimpleNamespace(max_threads_per_multi_processor=2048, regs_per_multiprocessor=65536,
                           shared_memory_per_multiprocessor=228 * 1024)
    assert programs_per_sm(regs=64, shared=0, num_warps=4, props=h100) == 8  # registers: 65536 / (64 * 128)
    assert programs_per_sm(regs=32, shared=0, num_warps=4, props=h100) == 16  # threads: 2048 / 128
    assert programs_per_sm(regs=64, shared=100 * 1024, num_warps=4, props=h100) == 2  # shared memory
    assert programs_per_sm(regs=255, shared=0, num_warps=8, props=h100) == 1
    assert programs_per_sm(regs=129, shared=0, num_warps=8, props=h100) == 1  # 129 regs allocate as 136
