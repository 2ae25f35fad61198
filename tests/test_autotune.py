"""backend="auto" on CUDA (fastrnn/autotune.py, fastrnn/tunecache.py, `python -m fastrnn tune`), on CPU:
the selection with injected candidates and timers, the cache file, the static rule, the compile
path, and the glue through modules -> rnn_stack -> fused with a fake "decides by signature" device."""
import json
import multiprocessing
import os
import threading
import warnings

import pytest
import torch

import fastrnn
from fastrnn import autotune, backends, fused, tunecache

import outcomes

IDENTITY = {"gpu": "Fake GPU 80GB", "capability": "8.0", "torch": "t", "cudnn": 1, "triton": "tr", "fastrnn": "f"}


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """A fresh cache directory, a fake GPU identity, no tuning-related environment, empty caches."""
    monkeypatch.setenv(tunecache.CACHE_ENV, str(tmp_path))
    for name in (autotune.ENV, autotune.STRATEGY_ENV, "FASTRNN_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tunecache, "identity", lambda device: dict(IDENTITY))
    monkeypatch.setattr(tunecache, "_CACHES", {})
    monkeypatch.setattr(tunecache, "_BY_DEVICE", {})
    return tmp_path


def sig(**kw):
    base = dict(T=50, B=16, I=32, H=64, dtype=torch.float32, training=False)
    return autotune.signature(kw.pop("mode", "LSTM"), **{**base, **kw})


def fixed_timer(times):
    """A timer that reads each candidate's time from `times` by the function's name."""
    return lambda fn: times[fn.__name__]


def named(name, fn):
    fn.__name__ = name
    return fn


def candidates(results, raises=()):
    """{label: callable} returning results[label] (or raising what `raises` maps it to)."""
    out = {}
    for label, value in results.items():
        def run(label=label, value=value):
            if label in dict(raises):
                raise dict(raises)[label]
            return value
        out[label] = named(label, run)
    return out


RIGHT = [torch.ones(3, 4), torch.zeros(2)]
WRONG = [torch.ones(3, 4) * 1.1, torch.zeros(2)]


# --- the signature ---------------------------------------------------------------------------------
def test_signature_buckets_T_and_reads_like_an_id():
    s = sig(T=50, dtype=torch.bfloat16, training=True, lengths=True, bidirectional=True, layers=2)
    assert s.T == 64 and sig(T=64).T == 64 and sig(T=65).T == 128 and sig(T=1).T == 1
    assert s.key == "LSTM-L2-bi-T64-B16-I32-H64-R64-bfloat16-train-packed"
    assert sig(mode="GRU", cell=True, T=1).key.startswith("GRUCell-L1-uni-T1-")
    assert sig(mode="RNN_TANH", cell=True, T=1).key.startswith("RNNCell_TANH-L1-uni-T1-")
    assert sig(mode="RNN_RELU", cell=True, T=1).key.startswith("RNNCell_RELU-L1-uni-T1-")
    assert autotune.signature("LSTM", T=2, B=1, I=1, H=1, dtype=torch.float64, training=False) is None


@pytest.fixture
def frozen_flags():
    """torch's global backend flags frozen, as torch's test harness (common_utils) leaves them for
    every later test of its process: cuDNN's then change only through torch.backends.cudnn.flags()."""
    name = "__allow_nonbracketed_mutation_flag"
    before = getattr(torch.backends, name)
    torch.backends.disable_global_flags()
    yield
    setattr(torch.backends, name, before)


@pytest.mark.parametrize("cudnn, matmul, tf32, tag", [
    (False, False, "", "-float32-infer"), (True, False, "cudnn", "-float32-tf32cudnn-infer"),
    (False, True, "matmul", "-float32-tf32matmul-infer"), (True, True, "cudnn+matmul", "-float32-tf32-infer"),
], ids=["off", "cudnn", "matmul", "both"])
def test_fp32_signature_says_which_tf32_flags_are_on(frozen_flags, cudnn, matmul, tf32, tag):
    """cuDNN follows only its own flag, cuBLAS and triton only matmul's: each is keyed apart."""
    with autotune.tf32_flags(cudnn=cudnn, matmul=matmul):
        assert sig().tf32 == tf32 and sig().key.endswith(tag)
        assert sig(dtype=torch.float16).tf32 == "" and sig(dtype=torch.float16).key.endswith("-float16-infer")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_measuring_sets_tf32_through_torchs_flags_and_only_for_fp32(frozen_flags, monkeypatch, dtype):
    seen = []
    monkeypatch.setattr(autotune, "candidates", lambda s, device: candidates({"aten": RIGHT}))
    monkeypatch.setattr(autotune, "cuda_timer", lambda fn: seen.append(
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)) or 1.0)
    with autotune.tf32_flags(cudnn=True, matmul=True):
        for tf32 in ("", "cudnn", "matmul"):
            assert autotune.measure_on_gpu(sig(dtype=dtype)._replace(tf32=tf32), "cpu")["choice"] == "aten"
        after = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    fp32 = [(False, False), (True, False), (False, True)]
    assert seen == (fp32 if dtype == torch.float32 else [(True, True)] * 3) and after == (True, True)


# --- selection -------------------------------------------------------------------------------------
def test_fastest_agreeing_candidate_wins():
    fns = candidates({"aten": RIGHT, "triton:rows": RIGHT, "triton:split": RIGHT})
    record = autotune.select(sig(), fns, fixed_timer({"aten": 3.0, "triton:rows": 2.0, "triton:split": 1.0}))
    assert record["choice"] == "triton:split" and record["excluded"] == {} and record["warn"] == []
    assert record["times_ms"] == {"aten": 3000.0, "triton:rows": 2000.0, "triton:split": 1000.0}


def test_a_faster_but_wrong_candidate_is_excluded_and_not_timed():
    timed = []
    fns = candidates({"aten": RIGHT, "triton:rows": WRONG, "triton:split": RIGHT})
    timer = lambda fn: timed.append(fn.__name__) or {"aten": 3.0, "triton:rows": 0.1, "triton:split": 2.0}[fn.__name__]
    record = autotune.select(sig(), fns, timer)
    assert record["choice"] == "triton:split"
    assert "triton:rows" not in timed and record["warn"] == ["triton:rows"]
    assert record["excluded"]["triton:rows"].startswith("disagrees with torch.nn: result 0: max abs err 1.000e-01")


def test_disagreement_is_judged_by_the_oracles_tolerance():
    # twice the oracle's fp32 table (T=64 steps) allows 1e-4 here, not 1e-2
    close = [RIGHT[0] + 1e-5, RIGHT[1]]
    far = [RIGHT[0] + 1e-2, RIGHT[1]]
    fns = candidates({"aten": RIGHT, "triton:rows": close, "triton:split": far})
    s = sig(T=64)._replace(tf32=False)
    record = autotune.select(s, fns, fixed_timer({"aten": 1.0, "triton:rows": 1.0, "triton:split": 0.5}))
    assert "triton:rows" not in record["excluded"] and "triton:split" in record["excluded"]


def test_nan_is_a_disagreement():
    fns = candidates({"aten": RIGHT, "triton:rows": [torch.full((3, 4), float("nan")), RIGHT[1]]})
    record = autotune.select(sig(), fns, fixed_timer({"aten": 1.0}))
    assert record["choice"] == "aten" and "NaN" in record["excluded"]["triton:rows"]


def test_a_raising_candidate_is_excluded_with_a_warning_a_refusal_without():
    fns = candidates({"aten": RIGHT, "triton:rows": RIGHT, "triton:split": RIGHT, "triton:stepwise": RIGHT},
                     raises={"triton:rows": RuntimeError("CUDA error: an illegal memory access"),
                             "triton:split": ValueError("the 'split' grid (4, 1, 1) cannot be co-resident")})
    record = autotune.select(sig(), fns, fixed_timer({"aten": 2.0, "triton:stepwise": 1.0}))
    assert record["choice"] == "triton:stepwise"
    assert record["excluded"] == {"triton:rows": "raised RuntimeError: CUDA error: an illegal memory access",
                                  "triton:split": "raised ValueError: the 'split' grid (4, 1, 1) cannot be co-resident"}
    assert record["warn"] == ["triton:rows"]  # the split refusal is fastrnn's own, expected


def test_when_torch_nn_itself_raises_nothing_is_verified_and_auto_stays_with_it():
    fns = candidates({"aten": RIGHT, "triton:rows": RIGHT}, raises={"aten": RuntimeError("cuDNN error")})
    record = autotune.select(sig(), fns, lambda fn: pytest.fail("nothing may be timed"))
    assert record["choice"] == "aten" and record["times_ms"] == {} and record["persist"] is False


@pytest.mark.parametrize("error, warned", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
    (RuntimeError("cudnn RNN backward does not have a deterministic implementation"), False),
], ids=["oom", "cuda-error", "deterministic"])
@pytest.mark.parametrize("when", ["run", "timed"])
def test_a_passing_failure_is_kept_in_memory_only(error, warned, when):
    """Out of memory, a CUDA error, a refusal under deterministic algorithms: nothing lasting about
    the case, so the record must not persist; only the CUDA error is worth a report."""
    fns = candidates({"aten": RIGHT, "triton:rows": RIGHT, "triton:split": RIGHT},
                     raises={"triton:rows": error} if when == "run" else ())

    def timer(fn):
        if fn.__name__ == "triton:rows":
            raise error
        return {"aten": 2.0, "triton:split": 1.0}[fn.__name__]
    record = autotune.select(sig(), fns, timer)
    assert record["choice"] == "triton:split" and "triton:rows" in record["excluded"]
    assert record["persist"] is False and record["warn"] == (["triton:rows"] if warned else [])


def test_a_clean_decision_persists():
    fns = candidates({"aten": RIGHT, "triton:rows": WRONG})
    assert autotune.select(sig(), fns, fixed_timer({"aten": 1.0}))["persist"] is True


@pytest.mark.parametrize("times, winner", [
    ({"aten": 1.0, "triton:rows": 1.0, "triton:split": 1.0}, "aten"),             # exact tie: torch.nn
    ({"aten": 1.005, "triton:rows": 1.0, "triton:split": 1.0}, "aten"),           # within TIE of the fastest
    ({"aten": 2.0, "triton:rows": 1.0, "triton:split": 1.0}, "triton:rows"),      # tie among strategies
    ({"aten": 2.0, "triton:rows": 1.0, "triton:split": 0.995}, "triton:rows"),
    ({"aten": 2.0, "triton:rows": 1.0, "triton:split": 0.9}, "triton:split"),
], ids=["exact", "within-tie", "strategies", "strategies-within-tie", "clear"])
def test_ties_resolve_the_same_way_every_time(times, winner):
    for _ in range(5):
        fns = candidates({label: RIGHT for label in times})
        assert autotune.select(sig(), fns, fixed_timer(times))["choice"] == winner


def test_a_candidate_that_fails_while_timed_is_excluded_with_a_warning():
    def timer(fn):
        if fn.__name__ == "triton:rows":
            raise RuntimeError("CUDA error: unspecified launch failure")
        return {"aten": 2.0, "triton:split": 1.5}[fn.__name__]
    fns = candidates({"aten": RIGHT, "triton:rows": RIGHT, "triton:split": RIGHT})
    record = autotune.select(sig(), fns, timer)
    assert record["choice"] == "triton:split" and record["warn"] == ["triton:rows"]
    assert "triton:rows" not in record["times_ms"]


def test_torch_nn_must_come_first():
    with pytest.raises(ValueError, match="first candidate must be torch.nn's"):
        autotune.select(sig(), candidates({"triton:rows": RIGHT, "aten": RIGHT}), fixed_timer({}))


def test_the_real_candidates_agree_on_cpu():
    """The candidates of a signature, built as on a GPU, run here (triton under the interpreter,
    where 'split' refuses): torch's op and the triton strategies agree, gradients included."""
    s = autotune.signature("GRU", T=3, B=2, I=3, H=5, layers=2, bidirectional=True, dtype=torch.float32,
                           training=True, lengths=True)._replace(tf32=False)
    with torch.enable_grad():
        record = autotune.select(s, autotune.candidates(s, "cpu"), lambda fn: 1.0)
    assert record["choice"] == "aten" and list(record["times_ms"]) == ["aten", "triton:rows", "triton:stepwise"]
    assert list(record["excluded"]) == ["triton:split"] and record["warn"] == []


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
def test_the_aten_candidate_runs_torch_in_the_signatures_training_mode(monkeypatch, training):
    """cuDNN's backward raises after a forward in inference mode: a training signature's aten
    candidate must run _VF in training mode, as torch.nn in train() does."""
    from fastrnn import aten
    modes, real = [], aten.run_stack
    monkeypatch.setattr(aten, "run_stack", lambda *a, **kw: modes.append(kw.get("training")) or real(*a, **kw))
    s = autotune.signature("LSTM", T=3, B=2, I=3, H=4, dtype=torch.float32, training=training)
    with torch.set_grad_enabled(training):
        autotune.candidates(s, "cpu")["aten"]()
    assert modes == [training]


def test_the_real_candidates_of_a_cell_agree_on_cpu():
    s = autotune.signature("RNN_RELU", T=1, B=3, I=4, H=6, dtype=torch.float32, training=False, cell=True)
    record = autotune.select(s._replace(tf32=False), autotune.candidates(s, "cpu"), lambda fn: 1.0)
    assert list(record["times_ms"]) == ["aten", "triton:rows", "triton:stepwise"]


# --- decide: cache, warnings, static rule, compile --------------------------------------------------
def fake_measure(record, calls):
    def measure(s, device):
        calls.append(s.key)
        return dict(record)
    return measure


def test_decide_measures_once_per_signature_and_warns_once(tuning):
    calls = []
    record = {"choice": "triton:split", "times_ms": {"aten": 2.0, "triton:split": 1.0},
              "excluded": {"triton:rows": "disagrees with torch.nn: result 0: max abs err 1e-1"},
              "warn": ["triton:rows"]}
    s = sig()
    with pytest.warns(autotune.AutotuneWarning) as caught:
        assert autotune.decide(s, "cuda:0", measure=fake_measure(record, calls)) == autotune.Choice("triton", "split")
    assert len(caught) == 1
    text = str(caught[0].message)
    assert s.key in text and "triton:rows disagrees" in text and "Fake GPU 80GB" in text
    assert "python -m fastrnn check --device cuda" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert autotune.decide(s, "cuda:0", measure=fake_measure(record, calls)).label == "triton:split"
    assert calls == [s.key]
    on_disk = json.loads(next(tuning.glob("autotune-*.json")).read_text())
    assert on_disk["decisions"][s.key] == {k: v for k, v in record.items() if k != "warn"}


def test_a_pinned_strategy_is_decided_apart(tuning, monkeypatch):
    calls = []
    autotune.decide(sig(), "cuda:0", measure=fake_measure({"choice": "aten"}, calls))
    monkeypatch.setenv(autotune.STRATEGY_ENV, "rows")
    assert autotune.candidate_labels() == ["aten", "triton:rows"]
    autotune.decide(sig(), "cuda:0", measure=fake_measure({"choice": "triton:rows"}, calls))
    assert calls == [sig().key, sig().key]


def test_a_decision_that_must_not_persist_stays_in_memory(tuning):
    calls = []
    passing = {"choice": "aten", "times_ms": {}, "excluded": {"aten": "raised OutOfMemoryError"}, "persist": False}
    assert autotune.decide(sig(), "cuda:0", measure=fake_measure(passing, calls)).label == "aten"
    assert autotune.decide(sig(), "cuda:0", measure=fake_measure(passing, calls)).label == "aten"
    autotune.decide(sig(H=128), "cuda:0", measure=fake_measure({"choice": "triton:rows"}, calls))  # a write
    assert calls == [sig().key, sig(H=128).key]  # once per process
    on_disk = json.loads(next(tuning.glob("autotune-*.json")).read_text())["decisions"]
    assert list(on_disk) == [sig(H=128).key]
    tunecache._CACHES.clear()
    tunecache._BY_DEVICE.clear()  # a new process measures it again
    autotune.decide(sig(), "cuda:0", measure=fake_measure({"choice": "triton:rows"}, calls))
    assert calls == [sig().key, sig(H=128).key, sig().key]


def test_the_decision_file_is_read_by_a_new_process(tuning):
    calls = []
    autotune.decide(sig(), "cuda:0", measure=fake_measure({"choice": "triton:rows"}, calls))
    tunecache._CACHES.clear()
    tunecache._BY_DEVICE.clear()  # as a new process starts
    assert autotune.decide(sig(), "cuda:0", measure=fake_measure({"choice": "aten"}, calls)).label == "triton:rows"
    assert len(calls) == 1


def test_a_cached_lookup_works_out_the_file_name_once(tuning, monkeypatch, tmp_path_factory):
    """Every call of auto looks its decision up: the file's name (json + sha256 of the identity)
    is worked out again only when the directory or the identity changes."""
    calls, real = [], tunecache.path_for
    monkeypatch.setattr(tunecache, "path_for", lambda *a: calls.append(a[0]) or real(*a))
    for _ in range(3):
        autotune.decide(sig(), "cuda:0", measure=fake_measure({"choice": "aten"}, []))
    assert calls == [str(tuning)]
    other = str(tmp_path_factory.mktemp("other"))
    monkeypatch.setenv(tunecache.CACHE_ENV, other)
    autotune.decide(sig(), "cuda:0", measure=fake_measure({"choice": "aten"}, []))
    monkeypatch.setattr(tunecache, "identity", lambda device: dict(IDENTITY, torch="t2"))
    autotune.decide(sig(), "cuda:0", measure=fake_measure({"choice": "aten"}, []))
    assert calls == [str(tuning), other, other] and len(list(tuning.glob("autotune-*.json"))) == 1


@pytest.fixture
def autotune_off(monkeypatch):
    monkeypatch.setenv(autotune.ENV, "0")


@pytest.mark.parametrize("kw, label", [
    (dict(dtype=torch.float16, B=16, H=256), "aten"),                      # persistent: H % 128 == 0
    (dict(dtype=torch.float16, B=16, H=1024, training=True), "aten"),
    (dict(dtype=torch.float16, B=16, H=160), "aten"),                      # small-H forward
    (dict(dtype=torch.float16, B=16, H=160, training=True), "triton"),     # small-H backward stops at 128
    (dict(dtype=torch.float16, B=12, H=256), "triton"),                    # B not a multiple of 8
    (dict(dtype=torch.float16, B=16, H=256, layers=2), "triton"),
    (dict(dtype=torch.float16, B=16, H=256, bidirectional=True), "triton"),
    (dict(dtype=torch.float16, B=16, H=2048), "triton"),
    (dict(dtype=torch.bfloat16, B=16, H=256), "triton"),
    (dict(dtype=torch.float32, B=16, H=256), "triton"),
    (dict(dtype=torch.float16, B=16, H=256, cell=True, T=1), "triton"),
])
def test_autotune_off_is_the_static_rule(tuning, autotune_off, kw, label):
    s = sig(**kw)
    assert autotune.decide(s, "cuda:0", measure=lambda *a: pytest.fail("measured")).label == label
    assert not list(tuning.iterdir())  # nor is anything written


def test_autotune_env_is_checked(tuning, monkeypatch):
    monkeypatch.setenv(autotune.ENV, "yes")
    with pytest.raises(ValueError, match="FASTRNN_AUTOTUNE must be 0 .* got 'yes'"):
        autotune.decide(sig(), "cuda:0")


def test_while_compiling_nothing_is_measured(tuning, monkeypatch):
    calls = []
    autotune.decide(sig(H=256), "cuda:0", measure=fake_measure({"choice": "triton:stepwise"}, calls))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    never = lambda *a: pytest.fail("measured while tracing")
    assert autotune.decide(sig(H=256), "cuda:0", measure=never).label == "triton:stepwise"   # remembered
    persistent = sig(H=256, dtype=torch.float16)
    assert autotune.decide(persistent, "cuda:0", measure=never).label == "aten"             # the static rule
    assert autotune.decide(sig(H=512), "cuda:0", measure=never).label == "triton"
    assert calls == [sig(H=256).key]


@pytest.fixture
def current_device(monkeypatch):
    """torch.cuda.device as a stand-in that tracks which CUDA device is current (0 to begin with)."""
    import contextlib
    current = [0]

    @contextlib.contextmanager
    def device(d):
        before, current[0] = current[0], torch.device(d).index
        try:
            yield
        finally:
            current[0] = before
    monkeypatch.setattr(torch.cuda, "device", device)
    return current


def test_measuring_and_the_capture_check_run_on_the_calls_device(tuning, monkeypatch, current_device):
    seen = []
    monkeypatch.setattr(autotune, "candidates", lambda s, device: seen.append(("built", current_device[0])) or
                        candidates({"aten": RIGHT}))
    monkeypatch.setattr(autotune, "cuda_timer", lambda fn: seen.append(("timed", current_device[0])) or 1.0)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing",
                        lambda: seen.append(("capture?", current_device[0])) or False)
    assert autotune.decide(sig(dtype=torch.float16), torch.device("cuda", 1)).label == "aten"
    assert seen == [("capture?", 1), ("built", 1), ("timed", 1)] and current_device[0] == 0


def test_while_a_cuda_graph_is_captured_nothing_is_measured(tuning, monkeypatch):
    monkeypatch.setattr(autotune, "_capturing", lambda device: True)
    assert autotune.decide(sig(), "cuda:0", measure=lambda *a: pytest.fail("measured")).label == "triton"


def test_under_a_fake_tensor_mode_nothing_is_measured(tuning):
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        assert autotune.decide(sig(), "cuda:0", measure=lambda *a: pytest.fail("measured")).label == "triton"
    assert not list(tuning.iterdir())


def test_decide_traces_under_torch_compile_fullgraph(tuning):
    """The decision as torch.compile(fullgraph=True) traces it: no graph break, no file read,
    the remembered decision or the static rule, each call its own."""
    calls = []
    autotune.decide(sig(B=3), "cpu", measure=fake_measure({"choice": "triton:stepwise"}, calls))

    def f(x):
        s = autotune.signature("LSTM", T=50, B=x.shape[1], I=32, H=64, dtype=x.dtype, training=False)
        choice = autotune.decide(s, x.device, measure=autotune.measure_on_gpu)
        return x * 10 if choice.strategy == "stepwise" else x * 20 if choice.backend == "triton" else x + 100

    f = torch.compile(f, fullgraph=True, backend="eager")
    assert f(torch.ones(2, 3))[0, 0].item() == 10                         # remembered
    assert f(torch.ones(2, 5))[0, 0].item() == 20                         # static: triton
    assert f(torch.ones(2, 16, dtype=torch.float16))[0, 0].item() == 101  # static: persistent cuDNN
    assert calls == [sig(B=3).key]


# --- the cache file ---------------------------------------------------------------------------------
def test_cache_round_trip(tuning):
    path = tunecache.path_for(str(tuning), IDENTITY)
    assert os.path.basename(path).startswith("autotune-fake-gpu-80gb-sm80-")
    record = {"choice": "triton:split", "times_ms": {"aten": 1.5, "triton:split": 0.5}, "excluded": {}}
    tunecache.DecisionCache(path, IDENTITY).put("k1", record)
    again = tunecache.DecisionCache(path, IDENTITY)
    assert again.get("k1") == record and again.get("k2") is None
    data = json.loads(open(path).read())
    assert data["format"] == tunecache.FORMAT and data["identity"] == IDENTITY
    assert [p.name for p in tuning.iterdir() if p.suffix == ".tmp"] == []  # no temporary file left


def test_the_cache_file_gets_the_umasks_mode_not_mkstemps(tuning):
    path = tunecache.path_for(str(tuning), IDENTITY)
    mask = os.umask(0o022)
    try:
        tunecache.DecisionCache(path, IDENTITY).put("k", {"choice": "aten"})
    finally:
        os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_another_identity_gets_another_file(tuning):
    other = dict(IDENTITY, torch="t2")
    assert tunecache.path_for(str(tuning), other) != tunecache.path_for(str(tuning), IDENTITY)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(tunecache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tunecache.cache_dir() == str(tmp_path / "xdg" / "fastrnn")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tunecache.cache_dir() == str(tmp_path / "home" / ".cache" / "fastrnn")
    monkeypatch.setenv(tunecache.CACHE_ENV, str(tmp_path / "mine"))
    assert tunecache.cache_dir() == str(tmp_path / "mine")


@pytest.mark.parametrize("content, why", [
    ("{not json", "cannot be read as JSON"),
    ('{"format": 1, "identity": {"gpu": "Other"}, "decisions": {}}', "its decisions hold for"),
    ('[1, 2]', "not a format-1 fastrnn decision file"),
    (json.dumps({"format": 1, "identity": IDENTITY, "decisions": {"k": {"choice": "cudnn"}}}), "is not a decision"),
], ids=["corrupt", "foreign", "not-ours", "bad-entry"])
def test_a_corrupt_or_foreign_file_is_ignored_with_one_warning_and_rebuilt(tuning, content, why):
    path = tunecache.path_for(str(tuning), IDENTITY)
    with open(path, "w") as f:
        f.write(content)
    cache = tunecache.DecisionCache(path, IDENTITY)
    with pytest.warns(tunecache.CacheWarning, match=why) as caught:
        assert cache.get("k") is None
        cache.put("k2", {"choice": "aten"})
    assert len(caught) == 1 and "it will be rebuilt" in str(caught[0].message)
    data = json.loads(open(path).read())
    assert data["identity"] == IDENTITY and data["decisions"] == {"k2": {"choice": "aten"}}


def test_an_unwritable_directory_warns_once_and_keeps_deciding(tuning, monkeypatch):
    target = tuning / "file"
    target.write_text("")
    cache = tunecache.DecisionCache(str(target / "autotune.json"), IDENTITY)  # its directory is a file
    with pytest.warns(tunecache.CacheWarning) as caught:
        cache.put("a", {"choice": "aten"})
        cache.put("b", {"choice": "aten"})
    read, write = (str(w.message) for w in caught)  # once each, however many puts
    assert "cannot be read (NotADirectoryError" in read and "cannot write auto's decision cache" in write
    assert "decisions stay in this process's memory" in write
    assert cache.get("a") == cache.get("b") == {"choice": "aten"}


def _writer(path, worker, n):
    cache = tunecache.DecisionCache(path, IDENTITY)
    for k in range(n):
        cache.put(f"w{worker}-{k}", {"choice": "aten", "times_ms": {"aten": float(k)}, "excluded": {}})


def test_concurrent_writers_lose_nothing_and_the_file_is_always_whole(tuning):
    path = tunecache.path_for(str(tuning), IDENTITY)
    workers, n = 4, 25
    stop, seen, bad = threading.Event(), [0], []

    def read():
        while not stop.is_set():
            try:
                with open(path) as f:
                    json.load(f)
                seen[0] += 1
            except FileNotFoundError:
                pass
            except ValueError as exc:
                bad.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, n)) for w in range(workers)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
    finally:
        stop.set()
        reader.join()
    assert [p.exitcode for p in procs] == [0] * workers
    assert bad == [] and seen[0] > 0
    decisions = json.loads(open(path).read())["decisions"]
    assert sorted(decisions) == sorted(f"w{w}-{k}" for w in range(workers) for k in range(n))


# --- the glue: module -> rnn_stack -> fused, with a fake "decides by signature" device ---------------
@pytest.fixture
def fake_gpu(tuning, monkeypatch):
    """CPU tensors take the CUDA path of auto (the interpreter runs the kernels); decisions come
    from `choices` (signature key -> label), and `seen` lists the keys decided and the configs
    the fused ops got."""
    monkeypatch.setattr(backends, "tunes_by_signature", lambda x: True)
    state = {"choices": {}, "decided": [], "configs": []}

    def measure(s, device):
        state["decided"].append(s.key)
        return {"choice": state["choices"].get(s.key, "triton:rows"), "times_ms": {}, "excluded": {}}
    monkeypatch.setattr(autotune, "measure_on_gpu", measure)
    for name in ("lstm_directions", "gru_directions", "elman_directions"):
        real = getattr(fused, name)

        def spy(*args, _real=real, config=None, **kw):
            state["configs"].append(config)
            return _real(*args, config=config, **kw)
        monkeypatch.setattr(fused, name, spy)
    return state


def test_a_module_decides_once_and_rnn_stack_runs_the_chosen_strategy(fake_gpu):
    m = fastrnn.LSTM(4, 6, num_layers=2)
    x = torch.randn(5, 3, 4)
    fake_gpu["choices"] = {}
    with torch.no_grad():
        m(x)
        m(x)
        key = m._signature(x, (), m._layer_weights()).key
    assert fake_gpu["decided"] == [key] and key.startswith("LSTM-L2-uni-T8-B3-I4-H6-R6-float32")
    assert key.endswith("-infer")  # no grad: no backward follows
    assert fake_gpu["configs"] == [{"STRATEGY": "rows"}] * 4  # two layers, two calls


def test_a_module_whose_choice_is_aten_runs_torch_nn(fake_gpu, monkeypatch):
    m = fastrnn.GRU(4, 6, batch_first=True)
    x = torch.randn(3, 5, 4)
    s = m._signature(x, (), m._layer_weights())
    fake_gpu["choices"] = {s.key: "aten"}
    ran = []
    monkeypatch.setattr(torch.nn.GRU, "forward", lambda self, *a: ran.append(a) or ("out", "h"))
    assert m(x) == ("out", "h") and len(ran) == 1
    assert fake_gpu["configs"] == [] and fake_gpu["decided"] == [s.key]
    assert s.T == 8 and s.B == 3 and s.training  # batch_first read; parameters require grad


def test_packed_input_decides_by_its_own_signature(fake_gpu):
    m = fastrnn.RNN(4, 6, bidirectional=True)
    x = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 3, 4), torch.tensor([5, 3, 2]))
    fake_gpu["choices"] = {}
    with torch.no_grad():
        m(x)
    assert len(fake_gpu["decided"]) == 1 and fake_gpu["decided"][0].startswith("RNN_TANH-L1-bi-T8-B3-I4-H6-R6-")
    assert fake_gpu["decided"][0].endswith("-infer-packed") and fake_gpu["configs"] == [{"STRATEGY": "rows"}]


@pytest.mark.parametrize("cls, kw, name", [(fastrnn.LSTMCell, {}, "LSTMCell"), (fastrnn.GRUCell, {}, "GRUCell"),
                                           (fastrnn.RNNCell, {}, "RNNCell_TANH"),
                                           (fastrnn.RNNCell, {"nonlinearity": "relu"}, "RNNCell_RELU")])
def test_a_cell_decides_by_its_own_signature_all_the_way_down(fake_gpu, cls, kw, name):
    cell = cls(4, 6, **kw)
    x = torch.randn(3, 4)
    s = cell._signature(x, None)
    fake_gpu["choices"] = {s.key: "triton:stepwise"}
    cell(x)
    assert fake_gpu["decided"] == [s.key] and s.key.startswith(f"{name}-L1-uni-T1-B3-I4-H6-R6-")
    assert fake_gpu["configs"] == [{"STRATEGY": "stepwise"}]


def test_relu_and_tanh_cells_are_decided_apart(fake_gpu):
    x = torch.randn(3, 4)
    fastrnn.RNNCell(4, 6, nonlinearity="tanh")(x)
    fastrnn.RNNCell(4, 6, nonlinearity="relu")(x)
    assert [key.split("-")[0] for key in fake_gpu["decided"]] == ["RNNCell_TANH", "RNNCell_RELU"]


def test_a_compiled_module_uses_the_remembered_decision_and_never_measures(fake_gpu):
    """torch.compile(fullgraph=True) through the whole path: the eager call's decision (its strategy
    reaches the fused op inside the graph), the static rule for a signature never seen eagerly."""
    x = torch.randn(5, 3, 4)
    lstm, gru = fastrnn.LSTM(4, 6), fastrnn.GRU(4, 6)
    with torch.no_grad():
        fake_gpu["choices"] = {lstm._signature(x, (), lstm._layer_weights()).key: "triton:stepwise"}
        lstm(x)
        decided = list(fake_gpu["decided"])
        fake_gpu["configs"].clear()
        torch.compile(lstm, fullgraph=True, backend="eager")(x)
        torch.compile(gru, fullgraph=True, backend="eager")(x)
    assert fake_gpu["decided"] == decided  # nothing measured while tracing
    assert fake_gpu["configs"] == [{"STRATEGY": "stepwise"}, None]  # gru: the static rule's heuristic


def test_measuring_inside_non_reentrant_checkpointing(tuning, monkeypatch):
    """The first call of a signature inside torch.utils.checkpoint(use_reentrant=False): the
    measurement's own backward must not run checkpointing's hooks (which recompute the caller's
    forward, and measured again inside the measurement, until CheckpointError)."""
    monkeypatch.setattr(backends, "tunes_by_signature", lambda x: True)
    monkeypatch.setenv(autotune.STRATEGY_ENV, "rows")
    monkeypatch.setattr(autotune, "cuda_timer", lambda fn: 1.0)
    measured, real = [], autotune.measure_on_gpu
    monkeypatch.setattr(autotune, "measure_on_gpu", lambda s, device: measured.append(s.key) or real(
        s._replace(tf32=False), "cpu"))
    m = fastrnn.GRU(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    torch.utils.checkpoint.checkpoint(lambda x: m(x)[0].sum(), x, use_reentrant=False).backward()
    assert len(measured) == 1 and measured[0].endswith("-train") and x.grad is not None


def test_a_decision_asked_while_measuring_takes_the_static_rule(tuning):
    inner = []

    def measure(s, device):
        with autotune._measuring():
            inner.append(autotune.decide(sig(dtype=torch.float16, H=256), "cuda:0",
                                         measure=lambda *a: pytest.fail("measured inside a measurement")))
        return {"choice": "triton:rows"}
    assert autotune.decide(sig(), "cuda:0", measure=measure).label == "triton:rows"
    assert inner == [autotune.Choice("aten")]


def test_a_compiled_module_reads_decisions_another_process_made(fake_gpu):
    """`python -m fastrnn tune`, or an earlier run, then torch.compile(fullgraph=True) in a new
    process: the file's decision reaches the graph, without measuring and without a graph break."""
    x = torch.randn(5, 3, 4)
    lstm = fastrnn.LSTM(4, 6)
    with torch.no_grad():
        fake_gpu["choices"] = {lstm._signature(x, (), lstm._layer_weights()).key: "triton:stepwise"}
        lstm(x)
        tunecache._CACHES.clear()
        tunecache._BY_DEVICE.clear()  # as a new process starts
        fake_gpu["configs"].clear()
        torch.compile(lstm, fullgraph=True, backend="eager")(x)
    assert len(fake_gpu["decided"]) == 1 and fake_gpu["configs"] == [{"STRATEGY": "stepwise"}]


def test_a_compiled_module_is_not_recompiled_by_a_later_decision(tuning, monkeypatch):
    monkeypatch.setattr(backends, "tunes_by_signature", lambda x: True)
    monkeypatch.setattr(autotune, "measure_on_gpu", lambda s, device: {"choice": "triton:rows"})
    torch._dynamo.reset()  # another test's graphs of the same forward would count as compiles of this one
    x = torch.randn(5, 3, 4)
    lstm = torch.compile(fastrnn.LSTM(4, 6), fullgraph=True, backend="eager")
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        lstm(x)
        fastrnn.GRU(4, 6)(x)  # eager: decides (and remembers) another signature
        lstm(x)


def test_rnn_stack_alone_decides_by_its_own_signature(fake_gpu):
    x, h0 = torch.randn(5, 2, 3), torch.zeros(1, 2, 4)
    w = [(torch.randn(4, 3), torch.randn(4, 4), None, None)]
    fake_gpu["choices"] = {}
    fastrnn.rnn_stack(x, h0, w, mode="RNN_RELU", num_layers=1, bidirectional=False)
    assert fake_gpu["decided"][0].startswith("RNN_RELU-L1-uni-T8-B2-I3-H4-R4-float32")
    assert fake_gpu["configs"] == [{"STRATEGY": "rows"}]


def test_rnn_stack_with_a_strategy_runs_triton_even_where_auto_would_pick_aten(fake_gpu):
    x, h0 = torch.randn(5, 2, 3), torch.zeros(1, 2, 4)
    w = [(torch.randn(4, 3), torch.randn(4, 4), None, None)]
    s = autotune.signature("RNN_TANH", T=5, B=2, I=3, H=4, dtype=torch.float32, training=False)
    fake_gpu["choices"] = {s.key: "aten"}
    fastrnn.rnn_stack(x, h0, w, mode="RNN_TANH", num_layers=1, bidirectional=False, strategy="stepwise")
    assert fake_gpu["decided"] == [] and fake_gpu["configs"] == [{"STRATEGY": "stepwise"}]


def test_an_explicit_backend_is_never_tuned(fake_gpu):
    m = fastrnn.LSTM(4, 6, backend="triton")
    m(torch.randn(5, 3, 4))
    assert fake_gpu["decided"] == [] and fake_gpu["configs"] == [None]


def test_a_strategy_off_triton_is_an_error():
    x, h0 = torch.randn(5, 2, 3), torch.zeros(1, 2, 4)
    w = [(torch.randn(4, 3), torch.randn(4, 4), None, None)]
    with pytest.raises(fastrnn.BackendError, match="strategy='rows' is a launch strategy of the triton backend"):
        fastrnn.rnn_stack(x, h0, w, mode="RNN_TANH", num_layers=1, bidirectional=False, backend="aten",
                          strategy="rows")


def test_cpu_auto_is_unchanged(tuning, monkeypatch):
    """On CPU auto never asks the tuner: torch's kernels where they run (tests/test_backends.py has the rest)."""
    monkeypatch.setattr(autotune, "decide", lambda *a, **k: pytest.fail("auto tuned on CPU"))
    x = torch.randn(5, 3, 4)
    assert backends.choose("auto", x, mode="LSTM") == ("aten", None)
    fastrnn.LSTM(4, 6)(x)
    fastrnn.GRUCell(4, 6)(x[0])
    m = fastrnn.LSTM(4, 6)
    assert m._signature(x, (), m._layer_weights()) is None


# --- python -m fastrnn tune -------------------------------------------------------------------------
def test_tune_on_a_machine_without_cuda_says_so(capsys, monkeypatch, tuning):
    from fastrnn.__main__ import main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["tune"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.startswith("fastrnn tune: no CUDA device is visible, so there is nothing to tune")


@pytest.mark.parametrize("argv, message", [
    (["--registry", "huge"], "argument --registry: invalid choice: 'huge'"),
    (["--device", "cpu"], "argument --device: 'cpu': tune measures on CUDA GPUs only"),
    (["--device", "meta"], "argument --device: 'meta': nothing can be timed on the meta device"),
])
def test_tune_usage_errors(capsys, argv, message):
    assert outcomes.usage_error(capsys, "tune", *argv).startswith(message)


def test_tune_with_autotune_off_is_a_usage_error(capsys, tuning, autotune_off):
    assert "FASTRNN_AUTOTUNE=0 is set" in outcomes.usage_error(capsys, "tune")


def test_tune_fills_the_cache(capsys, monkeypatch, tuning):
    """tune's loop on a stand-in GPU: every case decided once, then listed as cached."""
    from fastrnn import tune
    from fastrnn.__main__ import main
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: __import__("contextlib").nullcontext())
    monkeypatch.setattr(autotune, "measure_on_gpu", fake_measure(
        {"choice": "triton:split", "times_ms": {"aten": 2.0, "triton:split": 1.0}, "excluded": {}}, calls))
    quick = fastrnn.registry.quick
    monkeypatch.setattr(tune.registry, "quick", lambda device: quick("cpu"))
    assert main(["tune", "--cases", "lstm,T64-B16-H256"]) == 0
    out = capsys.readouterr().out
    assert "decisions in " + str(tuning) in out and len(calls) == 2  # infer and train
    assert out.count("triton:split  measured  aten 2.000, triton:split 1.000") == 2
    assert main(["tune", "--cases", "lstm,T64-B16-H256"]) == 0
    assert capsys.readouterr().out.count("cached") == 2 and len(calls) == 2
