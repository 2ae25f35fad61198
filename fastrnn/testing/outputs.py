"""Comparing whole RNN results: a tensor, an (output, h_n) / (output, (h_n, c_n)) tuple, or a
PackedSequence, with a message that names the part that differs and where."""
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .compare import assert_close

__all__ = ["assert_rnn_close", "rnn_leaves"]


def _is_rnn_result(x):
    """(output, h_n) or (output, (h_n, c_n)), as torch.nn.RNN / GRU / LSTM return."""
    if not (isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], (torch.Tensor, PackedSequence))):
        return False
    hidden = x[1]
    return isinstance(hidden, torch.Tensor) or (
        isinstance(hidden, tuple) and len(hidden) == 2 and all(isinstance(h, torch.Tensor) for h in hidden))


def rnn_leaves(actual, expected, name=None):
    """Pair up the tensors of two RNN results: a list of (name, actual, expected).

    An RNN result gets the names 'output', 'h_n', 'c_n'; other tuples get '<name>[i]'. A
    PackedSequence's batch_sizes, sorted_indices and unsorted_indices must match exactly (raises
    AssertionError otherwise); its data is compared padded back to [T, B, *] in the original batch
    order, so a mismatch's index reads as (time step, sequence, feature).
    """
    if name is None and _is_rnn_result(actual) and _is_rnn_result(expected):
        out = rnn_leaves(actual[0], expected[0], "output")
        if isinstance(actual[1], torch.Tensor) and isinstance(expected[1], torch.Tensor):
            return out + [("h_n", actual[1], expected[1])]
        if isinstance(actual[1], tuple) and isinstance(expected[1], tuple):
            return out + [("h_n", actual[1][0], expected[1][0]), ("c_n", actual[1][1], expected[1][1])]
        raise AssertionError(f"hidden state: actual is {type(actual[1]).__name__}, "
                             f"expected {type(expected[1]).__name__}")
    name = name or "output"
    if isinstance(actual, PackedSequence) or isinstance(expected, PackedSequence):
        if not (isinstance(actual, PackedSequence) and isinstance(expected, PackedSequence)):
            raise AssertionError(f"{name}: actual is {type(actual).__name__}, expected {type(expected).__name__}")
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            a, e = getattr(actual, field), getattr(expected, field)
            if (a is None) != (e is None) or (a is not None and not torch.equal(a.cpu(), e.cpu())):
                raise AssertionError(f"{name}.{field}: {a} != expected {e}")
        if actual.data.shape != expected.data.shape:
            raise AssertionError(f"{name}.data: shape {tuple(actual.data.shape)} != "
                                 f"expected {tuple(expected.data.shape)}")
        padded_a = pad_packed_sequence(actual)[0]
        padded_e = pad_packed_sequence(expected)[0]
        return [(f"{name} (PackedSequence padded to [T, B, *])", padded_a, padded_e)]
    if isinstance(actual, (tuple, list)) or isinstance(expected, (tuple, list)):
        if not (isinstance(actual, (tuple, list)) and isinstance(expected, (tuple, list))):
            raise AssertionError(f"{name}: actual is {type(actual).__name__}, expected {type(expected).__name__}")
        if len(actual) != len(expected):
            raise AssertionError(f"{name}: {len(actual)} items != expected {len(expected)}")
        return [leaf for i, (a, e) in enumerate(zip(actual, expected))
                for leaf in rnn_leaves(a, e, f"{name}[{i}]")]
    return [(name, actual, expected)]


def assert_rnn_close(actual, expected, *, name=None, atol=None, rtol=None, dtype=None, T=1):
    """Assert two RNN results are equal within tolerances (see `assert_close`).

    actual / expected: a Tensor, a PackedSequence, an RNN result (output, h_n) or
    (output, (h_n, c_n)), or any tuple of those. The first differing part fails, with a message
    that names it ('h_n', 'output (PackedSequence padded to [T, B, *])', ...) and gives the max
    abs / rel error and the index of the first mismatch. Raises ValueError when neither side holds
    a tensor (an assertion that compares nothing must not pass).
    """
    leaves = rnn_leaves(actual, expected, name)
    if all(a is None and e is None for _, a, e in leaves):
        raise ValueError(f"{name or 'output'}: no tensor on either side, so nothing would be compared; "
                         "assert_rnn_close takes RNN results, tensors or tuples of them")
    for leaf_name, a, e in leaves:
        assert_close(a, e, name=leaf_name, atol=atol, rtol=rtol, dtype=dtype, T=T)
