"""pytest plugin: the `rnn_oracle` fixture, so checking a module is one line in a user's test suite.

    def test_my_lstm(rnn_oracle):
        rnn_oracle(MyLSTM)                       # raises AssertionError listing failing cases
        rnn_oracle(MyLSTM, dtype=torch.float32, device="cuda", quick=True)

fastrnn registers this module under the `pytest11` entry point, so the fixture is there as soon as
fastrnn is installed; without the entry point, import it (`from fastrnn.testing.plugin import
rnn_oracle`) or list `pytest_plugins = ["fastrnn.testing.plugin"]` in the top-level conftest.py.
Loading the plugin imports pytest and nothing else: `fastrnn` and `fastrnn.testing` load their
names on first use, and torch and the battery are imported when a test asks for `rnn_oracle`,
so every other pytest run in an environment with fastrnn installed pays nothing for it
(tests/test_plugin.py checks this).
"""
import pytest


@pytest.fixture
def rnn_oracle():
    """`check_module` (see fastrnn.testing.battery): `rnn_oracle(factory, **kwargs) -> Report`."""
    from .battery import check_module
    return check_module
