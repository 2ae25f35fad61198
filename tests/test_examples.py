"""The examples run (quick settings) with fastrnn and with torch.nn and reach the same accuracy."""
import importlib.util
import pathlib

import pytest
import torch

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    # Tiny models on a shared 2-core CI machine: one intra-op thread avoids oversubscription.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# (name, its options) -> the accuracy the quick run must beat (chance is 0.1 for digits, 0.125 tags)
TRAINED = {("digits_classifier", ()): 0.4, ("tagger", ()): 0.9, ("tagger", (("cell", "gru"),)): 0.9,
           ("seq2seq", ()): 0.5}


@pytest.mark.parametrize("name,options", list(TRAINED), ids=[n + "".join(f"-{v}" for _, v in o) for n, o in TRAINED])
def test_example_learns_the_same_with_fastrnn_and_torch(name, options, one_thread):
    example = _load(name)
    ours = example.main(quick=True, impl="fastrnn", **dict(options))
    theirs = example.main(quick=True, impl="torch", **dict(options))
    assert ours["accuracy"] > TRAINED[name, options], ours
    # Same seed, same initial weights, equal forward/backward up to rounding: same training run.
    assert abs(ours["accuracy"] - theirs["accuracy"]) <= 0.01, (ours, theirs)
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-3, abs=1e-4)


def test_bidirectional_shapes(one_thread, capsys):
    example = _load("bidirectional_shapes")
    ours = example.main(impl="fastrnn")
    theirs = example.main(impl="torch")
    T, B, P, H, LD = 6, 3, 4, 8, 4
    assert ours["shapes"] == theirs["shapes"] == {
        "time-major": ((T, B, 2 * P), (LD, B, P), (LD, B, H)),
        "unbatched": ((T, 2 * P), (LD, P), (LD, H)),
        "packed": ((T, B, 2 * P), (LD, B, P), (LD, B, H)),
        "batch_first": ((B, T, 2 * P), (LD, B, P), (LD, B, H)),
    }
    torch.testing.assert_close(ours["last_layer_state"], theirs["last_layer_state"], atol=1e-5, rtol=1e-4)
    assert "h_n (4, 3, 4)" in capsys.readouterr().out
