"""fastrnn.backends: what "auto" resolves to, and the probe that asks torch whether its own CPU
kernel runs a case on this CPU."""
import types

import pytest
import torch

import fastrnn
from fastrnn import backends

BF16, F16, F32, F64 = torch.bfloat16, torch.float16, torch.float32, torch.float64
TORCH_CLASSES = {"RNN_TANH": lambda: torch.nn.RNN(3, 4), "RNN_RELU": lambda: torch.nn.RNN(3, 4, nonlinearity="relu"),
                 "LSTM": lambda: torch.nn.LSTM(3, 4), "GRU": lambda: torch.nn.GRU(3, 4),
                 "RNNCell": lambda: torch.nn.RNNCell(3, 4), "LSTMCell": lambda: torch.nn.LSTMCell(3, 4),
                 "GRUCell": lambda: torch.nn.GRUCell(3, 4)}


@pytest.fixture
def fresh_probe(monkeypatch):
    """Empty probe caches for the test (restored afterwards), and no FASTRNN_BACKEND."""
    monkeypatch.setattr(backends, "_PROBED", {})
    monkeypatch.setattr(backends, "_RUNS", {})
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)


@pytest.fixture
def lstm_refused(monkeypatch, fresh_probe):
    """A CPU whose oneDNN refuses the LSTM under autocast, as one without AVX-512 does: the probe's
    tiny run raises oneDNN's error there. Returns the list of probed (mode, dtype, autocast)."""
    probed = []

    def run_tiny(mode, dtype, autocast_dtype, grad):
        probed.append((mode, dtype, autocast_dtype))
        if mode == "LSTM" and autocast_dtype is not None:
            raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive")

    monkeypatch.setattr(backends, "_run_tiny", run_tiny)
    return probed


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("autocast", [None, BF16, F16], ids=["noautocast", "ac-bf16", "ac-f16"])
@pytest.mark.parametrize("dtype", [F32, F64, BF16, F16], ids=["f32", "f64", "bf16", "f16"])
@pytest.mark.parametrize("mode", backends.MODES)
def test_probe_says_what_torch_nn_does_on_this_cpu(mode, dtype, autocast, grad, fresh_probe):
    """The probe's tiny run and torch.nn's module agree, whatever this CPU can do."""
    module = TORCH_CLASSES[mode]().to(dtype)
    x = torch.randn(5, 2, 3, dtype=dtype) if "Cell" not in mode else torch.randn(2, 3, dtype=dtype)
    with torch.set_grad_enabled(grad):
        runs = backends.aten_runs(mode, dtype, autocast)
        try:
            with torch.autocast("cpu", dtype=autocast or BF16, enabled=autocast is not None):
                out = module(x)
            if grad:
                torch.autograd.grad([o.float().sum() for o in torch.utils._pytree.tree_leaves(out)],
                                    list(module.parameters()))
            err = None
        except RuntimeError as e:
            err = str(e)
    assert runs == (err is None), err or "torch.nn runs the case, the probe says it does not"
    assert (backends.aten_probe(mode, dtype, autocast) is None) == runs


def test_auto_picks_the_reference_where_torch_cannot_run_the_case(lstm_refused):
    x = torch.randn(2, 2, 3)
    assert backends.resolve("auto", x, mode="LSTM") == "aten"  # no autocast: torch's kernel runs
    with torch.autocast("cpu", dtype=BF16):
        assert backends.resolve("auto", x, mode="LSTM") == "reference"
        for mode in ("RNN_TANH", "RNN_RELU", "GRU", "RNNCell", "LSTMCell", "GRUCell"):
            assert backends.resolve("auto", x, mode=mode) == "aten"
        # without a mode "auto" must be right for every mode: the reference
        assert backends.resolve("auto", x) == "reference"
        assert not backends.runs_on_aten("auto", x)
        assert not backends.runs_on_aten("auto", x, mode="LSTM")
        assert backends.runs_on_aten("auto", x, mode="RNN_TANH")
        # a backend named explicitly stays what was asked for (and raises torch's error when run)
        assert backends.resolve("aten", x, mode="LSTM") == "aten"
        assert backends.runs_on_aten("aten", x, mode="LSTM")


def test_fastrnn_backend_env_is_obeyed_even_where_torch_cannot_run(lstm_refused, monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "aten")
    with torch.autocast("cpu", dtype=BF16):
        assert backends.resolve("auto", torch.randn(2, 2, 3), mode="LSTM") == "aten"


def test_probe_runs_once_per_case(lstm_refused):
    x = torch.randn(2, 2, 3)
    for _ in range(3):
        with torch.autocast("cpu", dtype=BF16):
            backends.resolve("auto", x, mode="LSTM")
        backends.resolve("auto", x, mode="LSTM")
    assert lstm_refused == [("LSTM", F32, BF16), ("LSTM", F32, None)]
    # the grad mode is part of the case: oneDNN has separate inference and training primitives
    with torch.no_grad():
        backends.resolve("auto", x, mode="LSTM")
    assert len(lstm_refused) == 3


def test_no_probe_while_compiling(lstm_refused, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.autocast("cpu", dtype=BF16):
        assert backends.resolve("auto", torch.randn(2, 2, 3), mode="LSTM") == "aten"
    assert lstm_refused == []


def test_non_floating_input_goes_to_torch_for_its_error(lstm_refused):
    """torch.nn's own dtype error is the one a user should see."""
    assert backends.resolve("auto", torch.ones(2, 2, 3, dtype=torch.int64)) == "aten"
    assert lstm_refused == []


def test_probe_rejects_unknown_modes():
    with pytest.raises(ValueError, match="mode must be one of"):
        backends.resolve("auto", torch.randn(2, 2, 3), mode="MGU")
    with pytest.raises(ValueError, match="mode must be one of"):
        backends.aten_probe("gru", F32)


@pytest.mark.parametrize("mode", [None, *backends.MODES])
def test_auto_on_meta_tensors_is_aten_like_torch_nn(mode, fresh_probe):
    """torch.nn.LSTM returns meta outputs on meta tensors; 'auto' runs torch.nn's forward there."""
    x = torch.randn(5, 2, 3, device="meta")
    assert backends.resolve("auto", x, mode=mode) == "aten"
    assert backends.runs_on_aten("auto", x, mode=mode)
    with torch.autocast("cpu", dtype=BF16):
        assert backends.resolve("auto", x, mode=mode) == "aten"
    assert backends._PROBED == {}  # nothing to probe on meta


@pytest.mark.parametrize("dtype", [F32, F16, BF16])
def test_triton_accepts_meta_tensors(dtype):
    """The triton custom ops have fake implementations, which give meta outputs."""
    x = torch.randn(5, 2, 3, device="meta", dtype=dtype)
    backends.check_triton(x)
    assert backends.resolve("triton", x) == "triton"
    with pytest.raises(backends.BackendError, match="float32, float16 and bfloat16"):
        backends.check_triton(x.double())


def test_module_auto_runs_where_torch_nn_raises(lstm_refused, monkeypatch):
    """On a CPU whose oneDNN refuses the LSTM under autocast the module's "auto" runs the
    reference, never torch.nn's forward."""
    model = fastrnn.LSTM(3, 4)

    def refuse(*args, **kwargs):
        raise AssertionError("auto ran torch.nn's forward where the probe said it cannot run")

    monkeypatch.setattr(type(model), "_torch_class", types.SimpleNamespace(forward=refuse))
    with torch.autocast("cpu", dtype=BF16):
        out, (h, c) = model(torch.randn(5, 2, 3))
    assert out.dtype == h.dtype == c.dtype == BF16


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"])
def test_modules_on_meta_give_torch_nns_meta_outputs(name, fresh_probe):
    kw = {"proj_size": 2, "num_layers": 2, "bidirectional": True} if name == "LSTM" else {}
    ours = getattr(fastrnn, name)(3, 4, device="meta", **kw)
    theirs = getattr(torch.nn, name)(3, 4, device="meta", **kw)
    x = torch.randn(*([] if "Cell" in name else [5]), 2, 3, device="meta")
    got, want = (torch.utils._pytree.tree_leaves(m(x)) for m in (ours, theirs))
    assert [(t.device.type, t.shape, t.dtype) for t in got] == [(t.device.type, t.shape, t.dtype) for t in want]



# Under CPU autocast on a CPU that refuses only the LSTM, "auto" keeps the Elman RNN, the GRU and the
# cells on torch's kernels: the modules and cells pass their mode to runs_on_aten.
@pytest.mark.parametrize("name", ["RNN", "GRU", "RNNCell", "LSTMCell", "GRUCell"])
def test_auto_keeps_other_modes_on_torch_where_only_the_lstm_is_refused(name, lstm_refused, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"auto ran the reference for {name}, which torch's kernel runs")

    monkeypatch.setattr(fastrnn.reference, "elman_layer", refuse)
    monkeypatch.setattr(fastrnn.reference, "lstm_layer", refuse)
    monkeypatch.setattr(fastrnn.reference, "gru_layer", refuse)
    model = getattr(fastrnn, name)(3, 4)
    with torch.autocast("cpu", dtype=BF16):
        model(torch.randn(2, 3) if "Cell" in name else torch.randn(5, 2, 3))


def test_the_probe_runs_on_the_cpu_whatever_the_default_device(fresh_probe):
    """A probe run under another default device (meta here) would answer for that device, and the
    cached answer would then send CPU calls to a kernel that cannot run them."""
    with torch.device("meta"):
        under_meta = backends.aten_probe("LSTM", torch.float32, BF16)
    backends._PROBED.clear()
    assert under_meta == backends.aten_probe("LSTM", torch.float32, BF16)
