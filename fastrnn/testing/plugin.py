"""pytest plugin: the `rnn_oracle` fixture, so checking a module is one line in a user's test suite.

    def test_my_lstm(rnn_oracle):
        rnn_oracle(MyLSTM)                       # raises AssertionError listing failing cases
        rnn_oracle(MyLSTM, dtype=torch.float32, device="cuda", quick=True)

fastrnn registers this module under the `pytest11` entry point, so the fixture is there as soon as
fastrnn is installed; without the entry point, import it (`from fastrnn.testing.plugin import
rnn_oracle`) or list `pytest_plugins = ["fastrnn.testing.plugin"]` in the top-level conftest.py.
The battery is imported lazily, so the plugin costs nothing in test runs that do not use it.
"""
import pytest


@pytest.fixture
def rnn_oracle():
    """`check_module` (see fastrnn.testing.battery): `rnn_oracle(factory, **kwargs) -> Report`."""
    from .battery import check_module
    return check_module
