"""fastrnn.RNN / LSTM / GRU as drop-ins: construction, attributes, parameters, repr,
serialisation and the `backend` argument, each checked against torch.nn itself."""
import copy
import io
import pickle
import warnings

import pytest
import torch

import fastrnn

from outcomes import outcome

PAIRS = [(fastrnn.RNN, torch.nn.RNN), (fastrnn.LSTM, torch.nn.LSTM), (fastrnn.GRU, torch.nn.GRU)]
PAIR_IDS = ["RNN", "LSTM", "GRU"]




# Constructor calls torch rejects; each must fail the same way (type and message) for fastrnn.
BAD_ARGS = [
    ((4, 8), dict(dropout=1.5)), ((4, 8), dict(dropout=-0.1)), ((4, 8), dict(dropout=True)),
    ((4, 8), dict(dropout="0.1")), ((4, 8), dict(bias=1)), ((4, 8), dict(batch_first=0)),
    ((4.0, 8), {}), ((0, 8), {}), ((4, 8.0), {}), ((4, 0), {}), ((4, 8, 0), {}),
    ((4, 8), dict(num_layers=-1)),
]


@pytest.mark.parametrize("args,kw", BAD_ARGS, ids=[f"{a}-{k}" for a, k in BAD_ARGS])
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_constructor_errors_equal_torch(pair, args, kw):
    fast, ref = pair
    want = outcome(lambda: ref(*args, **kw))
    assert want[0] != "ok"
    assert outcome(lambda: fast(*args, **kw)) == want


@pytest.mark.parametrize("kw", [dict(proj_size=-1), dict(proj_size=8), dict(proj_size=9)])
def test_lstm_proj_size_errors_equal_torch(kw):
    assert outcome(lambda: fastrnn.LSTM(4, 8, **kw)) == outcome(lambda: torch.nn.LSTM(4, 8, **kw))


@pytest.mark.parametrize("call", [lambda c: c(4, 8, proj_size=2), lambda c: c(4, 8, 1, "sigmoid"),
                                  lambda c: c(4, 8, nonlinearity="gelu")], ids=["proj", "pos-nl", "kw-nl"])
def test_rnn_only_errors_equal_torch(call):
    want = outcome(lambda: call(torch.nn.RNN))
    assert want[0] is ValueError
    assert outcome(lambda: call(fastrnn.RNN)) == want


@pytest.mark.parametrize("call", [lambda c: c(4, 8, proj_size=2), lambda c: c(4, 8, nonlinearity="tanh"),
                                  lambda c: c(4, 8, 1, True, False, 0.0, False, None, None, 3)],
                         ids=["proj", "nonlinearity", "too-many-positional"])
def test_gru_only_errors_equal_torch(call):
    want = outcome(lambda: call(torch.nn.GRU))
    assert want[0] in (ValueError, TypeError)
    assert outcome(lambda: call(fastrnn.GRU)) == want


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_dropout_with_one_layer_warns_like_torch(pair):
    fast, ref = pair
    for cls in (ref, fast):
        with pytest.warns(UserWarning) as record:
            cls(4, 8, dropout=0.5)
        assert [str(w.message) for w in record] == [
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            "expects num_layers greater than 1, but got dropout=0.5 and num_layers=1"]


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_bad_backend_name(pair):
    with pytest.raises(ValueError, match="backend must be one of"):
        pair[0](4, 8, backend="cudnn")


def test_positional_order_and_attributes():
    rnn = fastrnn.RNN(4, 8, 2, "relu", False, True, 0.25, True)
    ref = torch.nn.RNN(4, 8, 2, "relu", False, True, 0.25, True)
    lstm = fastrnn.LSTM(4, 8, 2, False, True, 1, True, 3)
    ref_lstm = torch.nn.LSTM(4, 8, 2, False, True, 1, True, 3)
    gru = fastrnn.GRU(4, 8, 2, False, True, 1, True, dtype=torch.float64)
    ref_gru = torch.nn.GRU(4, 8, 2, False, True, 1, True, dtype=torch.float64)
    attrs = ["mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
             "bidirectional", "proj_size"]
    for fast, want in ((rnn, ref), (lstm, ref_lstm), (gru, ref_gru)):
        for a in attrs:
            assert getattr(fast, a) == getattr(want, a), a
        assert type(fast.dropout) is float
        assert fast.backend == "auto"
    assert rnn.nonlinearity == "relu" and rnn.mode == "RNN_RELU"
    # RNNBase, not RNN/LSTM: Dynamo refuses those without a global switch (tests/test_compile.py)
    assert all(isinstance(m, torch.nn.RNNBase) for m in (rnn, lstm, gru))
    assert not isinstance(rnn, torch.nn.RNN) and not isinstance(lstm, torch.nn.LSTM)
    assert not isinstance(gru, torch.nn.GRU) and gru.mode == "GRU" and gru.weight_hh_l0.dtype == torch.float64


PARAM_CASES = [(pair, kw) for pair in PAIRS
               for kw in ({}, dict(num_layers=2, bidirectional=True), dict(bias=False, num_layers=2))]
PARAM_CASES.append((PAIRS[1], dict(proj_size=3, num_layers=2, bidirectional=True)))


@pytest.mark.parametrize("pair,kw", PARAM_CASES,
                         ids=[p[0].__name__ + "".join(f"-{k}{v}" for k, v in kw.items()) for p, kw in PARAM_CASES])
def test_parameters_names_shapes_order_and_init_equal_torch(pair, kw):
    fast_cls, ref_cls = pair
    torch.manual_seed(7)
    fast = fast_cls(5, 8, **kw)
    torch.manual_seed(7)
    ref = ref_cls(5, 8, **kw)
    got, want = fast.state_dict(), ref.state_dict()
    assert list(got) == list(want)
    assert [n for n, _ in fast.named_parameters()] == list(want) == fast._flat_weights_names
    assert list(fast.buffers()) == []
    for k in want:
        assert torch.equal(got[k], want[k]), k  # same shapes, same draws from the same RNG
    assert [[tuple(w.shape) for w in ws] for ws in fast.all_weights] == \
        [[tuple(w.shape) for w in ws] for ws in ref.all_weights]
    assert all(a is b for a, b in zip(fast._flat_weights, fast.parameters(), strict=True))
    bound = 1 / 8 ** 0.5
    fast.reset_parameters()
    assert all(p.abs().max() <= bound for p in fast.parameters())
    assert not any(torch.equal(fast.state_dict()[k], want[k]) for k in want)


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_state_dict_round_trips_both_ways(pair):
    fast_cls, ref_cls = pair
    fast, ref = fast_cls(5, 6, num_layers=2, bidirectional=True), ref_cls(5, 6, num_layers=2, bidirectional=True)
    ref.load_state_dict(fast.state_dict())
    back = fast_cls(5, 6, num_layers=2, bidirectional=True)
    back.load_state_dict(ref.state_dict())
    x = torch.randn(3, 2, 5)
    torch.testing.assert_close(back(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)


def test_repr():
    assert repr(fastrnn.LSTM(4, 8, proj_size=3, num_layers=2, bias=False, batch_first=True, dropout=0.1,
                             bidirectional=True)) == \
        "LSTM(4, 8, proj_size=3, num_layers=2, bias=False, batch_first=True, dropout=0.1, bidirectional=True)"
    assert repr(fastrnn.RNN(4, 8)) == repr(torch.nn.RNN(4, 8)) == "RNN(4, 8)"
    # torch hides nonlinearity='relu'; fastrnn shows it
    assert repr(fastrnn.RNN(4, 8, 2, "relu")) == "RNN(4, 8, num_layers=2, nonlinearity='relu')"
    assert repr(fastrnn.LSTM(4, 8, backend="reference")) == "LSTM(4, 8, backend='reference')"
    assert repr(fastrnn.GRU(4, 8, 2, batch_first=True)) == repr(torch.nn.GRU(4, 8, 2, batch_first=True)) == \
        "GRU(4, 8, num_layers=2, batch_first=True)"
    assert repr(fastrnn.GRU(4, 8, backend="aten")) == "GRU(4, 8, backend='aten')"


def test_flatten_parameters_is_a_silent_no_op():
    m = fastrnn.LSTM(4, 8)
    before = [p.data_ptr() for p in m.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.flatten_parameters()
    assert [p.data_ptr() for p in m.parameters()] == before


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_keep_class_backend_weights_and_outputs(pair, how):
    m = pair[0](5, 6, num_layers=2, backend="reference")
    if how == "deepcopy":
        c = copy.deepcopy(m)
    elif how == "pickle":
        c = pickle.loads(pickle.dumps(m))
    else:
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        c = torch.load(buf, weights_only=False)
    assert type(c) is type(m) and c.backend == "reference"
    assert c._flat_weights_names == m._flat_weights_names
    assert all(a is b for a, b in zip(c._flat_weights, c.parameters(), strict=True))
    x = torch.randn(3, 2, 5)
    assert torch.equal(c(x)[0], m(x)[0])


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_device_and_dtype_factory_arguments(pair):
    m = pair[0](5, 6, num_layers=2, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    meta = pair[0](5, 6, num_layers=2, device="meta")
    assert all(p.is_meta for p in meta.parameters())
    real = meta.to_empty(device="cpu")
    real.reset_parameters()
    assert real(torch.randn(2, 1, 5))[0].shape == (2, 1, 6)
    half = pair[0](5, 6).to(torch.float64)  # .to() refreshes _flat_weights
    assert half._flat_weights[0].dtype == torch.float64
    assert half(torch.randn(2, 1, 5, dtype=torch.float64))[0].dtype == torch.float64


def test_compiles_as_one_graph_with_dynamo_defaults():
    """torch.nn.LSTM graph-breaks (fullgraph raises) unless torch._dynamo.config.allow_rnn is
    set; fastrnn's modules compile whole with the switch left as torch ships it."""
    import torch._dynamo

    assert torch._dynamo.config.allow_rnn is False
    m = fastrnn.LSTM(3, 4, num_layers=2, batch_first=True, backend="reference")
    x = torch.randn(2, 3, 3)
    out, (h, c) = torch.compile(m, fullgraph=True, backend="eager")(x)
    want, (wh, wc) = m(x)
    for a, b in ((out, want), (h, wh), (c, wc)):
        torch.testing.assert_close(a, b)
