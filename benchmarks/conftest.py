"""pytest-benchmark over fastrnn.registry: `pytest benchmarks/ --benchmark-only`.

Options: `--grid quick|full` (default quick) and `--bench-device cpu|cuda` (default: cuda if
available). Without --benchmark-only (e.g. a plain `pytest` from the repository root) every case
runs once, untimed, as a smoke test, so the benchmarks never slow the test suite down.
"""
import pytest
import torch

from fastrnn import bench, registry


def pytest_addoption(parser):
    group = parser.getgroup("fastrnn benchmarks")
    group.addoption("--grid", choices=("quick", "full"), default="quick", help="which registry grid to run")
    group.addoption("--bench-device", type=bench.timing_device, default=None,
                    help="cuda or cpu (default: cuda if available)")


def bench_device(config):
    return torch.device(config.getoption("bench_device") or ("cuda" if torch.cuda.is_available() else "cpu"))


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        device = bench_device(metafunc.config)
        grid = registry.full_grid if metafunc.config.getoption("grid") == "full" else registry.quick
        cases = grid(device)
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture
def device(request):
    return bench_device(request.config)


@pytest.fixture
def timed(benchmark, request):
    """pytest-benchmark's fixture, timing only under --benchmark-only (or --benchmark-enable)."""
    opt = request.config.getoption
    if not (opt("benchmark_only") or opt("benchmark_enable")):
        benchmark.disabled = True
    return benchmark
