"""setup.py claims only the torch and triton versions CI tests, and CI tests the CPU-dependent
backend choice with oneDNN capped at AVX2."""
import ast
import re
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CI = (ROOT / ".ci" / "run").read_text()


def _requires():
    """setup.py's install_requires, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return {r.name: r.specifier for r in map(Requirement, ast.literal_eval(node.value))}
    raise AssertionError("setup.py has no install_requires")


def test_torch_range_is_exactly_the_minor_versions_ci_installs():
    tested = sorted({Version(v) for v in re.findall(r"pip install -q torch==([0-9.]+)", CI)})
    assert len(tested) >= 2, "CI should test the oldest and the newest torch setup.py allows"
    spec = _requires()["torch"]
    assert all(v in spec for v in tested)
    minors = {(v.major, v.minor) for v in tested}
    lo, hi = min(minors), max(minors)
    # the releases just outside the tested minors are refused: nothing untested is claimed
    assert Version(f"{lo[0]}.{lo[1] - 1}.99") not in spec
    assert Version(f"{hi[0]}.{hi[1] + 1}.0") not in spec
    assert Version(f"{hi[0]}.{hi[1]}.99") in spec


def test_installed_torch_and_triton_are_in_setup_pys_range():
    requires = _requires()
    for name in ("torch", "triton"):
        assert Version(Version(version(name)).base_version) in requires[name], (name, version(name))


def test_triton_range_is_narrow():
    spec = _requires()["triton"]
    assert Version("3.7.0") not in spec and Version("3.10.0") not in spec


def test_ci_reruns_the_autocast_tests_with_onednn_capped_at_avx2():
    runs = re.findall(r"ONEDNN_MAX_CPU_ISA=AVX2 python -m pytest[^\n]*(?:\\\n[^\n]*)*", CI)
    assert runs and "tests/test_autocast.py" in runs[0] and "tests/test_backends.py" in runs[0]


def test_ci_runs_the_newest_torch_in_a_venv_of_its_own():
    assert "--system-site-packages" not in CI
    venv = CI.index("python -m venv")
    assert CI.index("pip install -q torch==2.14.1") > venv
    readme = (ROOT / "README.md").read_text()
    command = re.search(r'python -m pip install -e "\.\[test\]" && (python -m pytest[^\n]*)', readme).group(1)
    assert CI.index(command, venv) > CI.index("pip install -q torch==2.14.1")  # the README's test command
