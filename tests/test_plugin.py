"""The pytest plugin (fastrnn.testing.plugin, registered under `pytest11`) loads without torch or
fastrnn's modules, and the lazy packages it imports still offer every public name."""
import os
import subprocess
import sys
import textwrap

import pytest

import fastrnn
import fastrnn.testing

# What loading the plugin must not import: each costs seconds, or sets Triton's mode too early.
HEAVY = ["torch", "triton", "fastrnn.modules", "fastrnn.functional", "fastrnn.kernels",
         "fastrnn.testing.battery", "fastrnn.testing.compare"]


def _run(args, cwd, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    full_env.update(env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=300)


def test_importing_the_plugin_imports_nothing_heavy(tmp_path):
    code = f"import sys, fastrnn.testing.plugin; print([m for m in {HEAVY!r} if m in sys.modules])"
    proc = _run(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


@pytest.mark.parametrize("autoload", [False, True], ids=["-p", "entry-point"])
def test_a_pytest_run_with_the_plugin_imports_nothing_heavy(tmp_path, autoload):
    """A user's unrelated test run: the plugin is loaded (explicitly, or through the entry point
    as pip installs it) and torch is still not imported when the tests run."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_trivial.py").write_text(textwrap.dedent(f"""
        import sys

        def test_nothing_heavy(request):
            assert request.config.pluginmanager.has_plugin("fastrnn.testing.plugin")
            loaded = [m for m in {HEAVY!r} if m in sys.modules]
            assert not loaded, loaded
    """))
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trivial.py"]
    if autoload:
        proc = _run(args, tmp_path)
    else:  # only this plugin, so another installed plugin cannot be what imports torch
        proc = _run(args[:-1] + ["-p", "fastrnn.testing.plugin", "test_trivial.py"], tmp_path,
                    PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_rnn_oracle_through_the_entry_point(tmp_path):
    """The fixture a user gets from `pip install fastrnn` alone (no conftest, no import)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_oracle.py").write_text(textwrap.dedent("""
        import pytest
        from torch import nn

        def test_torch_lstm(rnn_oracle):
            report = rnn_oracle(nn.LSTM, cases="T1")
            assert report.passed and report.results

        def test_broken(rnn_oracle):
            class Broken(nn.LSTM):
                def forward(self, x, hx=None):
                    out, (h, c) = super().forward(x, hx)
                    return out, (h + 1, c)
            with pytest.raises(AssertionError, match="h_n"):
                rnn_oracle(Broken, cases="T1")
    """))
    proc = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_oracle.py"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


@pytest.mark.parametrize("package", [fastrnn, fastrnn.testing], ids=lambda p: p.__name__)
def test_lazy_packages_offer_every_public_name(package):
    for name in package.__all__:
        assert getattr(package, name) is not None
    assert set(package.__all__) <= set(dir(package))
    namespace = {}
    exec(f"from {package.__name__} import *", namespace)
    assert set(package.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        package.no_such_name  # noqa: B018
    assert not hasattr(package, "_no_such_private_name")


def test_fastrnn_names_are_what_they_were():
    from fastrnn import LSTM, BackendError, convert, reference, rnn_stack
    from fastrnn.backends import BACKENDS
    from fastrnn.convert import convert as convert_function
    from fastrnn.modules import LSTM as modules_LSTM
    assert LSTM is modules_LSTM and fastrnn.BACKENDS is BACKENDS and issubclass(BackendError, RuntimeError)
    assert convert is convert_function and fastrnn.convert is convert_function  # the function, not the module
    assert reference.__name__ == "fastrnn.reference" and callable(rnn_stack)
    assert fastrnn.__version__ == "0.1.0"
    assert fastrnn.fused.__name__ == "fastrnn.fused"  # submodules resolve as after an eager import


def test_convert_stays_the_function_whoever_imports_the_module_first(tmp_path):
    """Importing the submodule fastrnn.convert binds it on the package; the public `convert` is
    the function of that name and must stay so, in whatever order things are imported."""
    code = ("from fastrnn.convert import to_torch\nimport fastrnn\nimport fastrnn.convert\n"
            "assert callable(fastrnn.convert) and fastrnn.convert.__name__ == 'convert', fastrnn.convert\n"
            "from fastrnn import convert\nassert callable(convert)\n"
            "import fastrnn.testing\nassert fastrnn.testing.check_module.__module__ == 'fastrnn.testing.battery'\n")
    proc = _run(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
