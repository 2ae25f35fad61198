"""torch.nn and fastrnn side by side on every registry case, grouped by case id.

Each callable synchronises the device itself (see fastrnn.bench.make_callables) and is warmed up
before timing, so Triton compilation and autotuning stay out of the numbers.
"""
import time

import pytest

from fastrnn import bench

IMPLS = ["torch.nn", "fastrnn"]


@pytest.mark.parametrize("impl", IMPLS)
def test_bench(timed, case, impl, device):
    fn = bench.make_callables(case, device)[impl]
    timed.group = case.id
    timed.extra_info.update(case.as_dict())
    if impl == "fastrnn":                     # the backend, and on triton the launch strategy per layer
        timed.extra_info["strategy"] = bench.launch_strategies(case, device)
    if timed.disabled:                        # smoke run: one untimed call
        timed(fn)
        return
    fn()                                      # compile / autotune / build oneDNN primitives
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    # about half a second of samples per case and implementation, at least 5 rounds
    rounds = max(5, min(200, int(0.5 / once)))
    timed.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
