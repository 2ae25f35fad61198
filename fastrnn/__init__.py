"""fastrnn: fused Triton kernels for the Elman RNN, LSTM and GRU, as a drop-in for torch.nn.

The public names load on first use (PEP 562): `import fastrnn` imports neither torch nor Triton,
so the pytest plugin that pip registers (fastrnn.testing.plugin) costs nothing in test runs that
do not use it, and `from fastrnn import LSTM` imports what LSTM needs and no more.
"""
import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> (submodule, attribute of it, or None for the submodule itself)
_EXPORTS = {
    "BACKENDS": ("backends", "BACKENDS"),
    "BackendError": ("backends", "BackendError"),
    "GRU": ("modules", "GRU"),
    "LSTM": ("modules", "LSTM"),
    "RNN": ("modules", "RNN"),
    "GRUCell": ("cells", "GRUCell"),
    "LSTMCell": ("cells", "LSTMCell"),
    "RNNCell": ("cells", "RNNCell"),
    "convert": ("convert", "convert"),
    "to_torch": ("convert", "to_torch"),
    "reference": ("reference", None),
    "rnn_stack": ("functional", "rnn_stack"),
}

__all__ = ["BACKENDS", "GRU", "LSTM", "RNN", "BackendError", "GRUCell", "LSTMCell", "RNNCell", "convert",
           "reference", "rnn_stack", "to_torch"]


def _load(namespace, exports, name):
    """PEP 562 `__getattr__` of a package whose public names load on first access: `exports` maps a
    name to (submodule, attribute of it, or None for the submodule itself); any other public name
    that is a submodule also resolves, as after an eager import. The value is cached in
    `namespace` (the package's globals), so later lookups do not come here."""
    package = namespace["__name__"]
    if name in exports:
        module, attr = exports[name]
        value = importlib.import_module(f"{package}.{module}")
        value = value if attr is None else getattr(value, attr)
    elif not name.startswith("_"):
        try:
            value = importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise  # the submodule exists and one of its own imports is missing
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    namespace[name] = value
    return value


def __getattr__(name):
    return _load(globals(), _EXPORTS, name)


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # Importing the submodule fastrnn.convert binds it on the package as `convert`, where the
        # public name is the function of that name: keep the function, whoever imports the module.
        if name in _EXPORTS and isinstance(value, types.ModuleType) and _EXPORTS[name][1] is not None:
            value = getattr(value, _EXPORTS[name][1])
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
