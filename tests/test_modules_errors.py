"""Bad forward input to fastrnn.RNN / LSTM / GRU raises what torch.nn raises, word for word;
and where torch forgets a check (packed input to the LSTM) fastrnn still makes it."""
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import fastrnn
from fastrnn.testing import assert_close

from outcomes import outcome

I, H, L = 4, 6, 2




def pair(name, **kw):
    fast = getattr(fastrnn, name)(I, H, num_layers=L, **kw, backend="reference")
    ref = getattr(torch.nn, name)(I, H, num_layers=L, **kw)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


r = torch.randn
# (id, input, hx) per class; every call must fail for torch, and fail the same way for fastrnn.
RNN_CASES = [
    ("1D", r(5), None), ("4D", r(1, 2, 3, I), None), ("input-size", r(5, 3, 5), None),
    ("input-dtype", r(5, 3, I, dtype=torch.float64), None),
    ("batched-2D-hx", r(5, 3, I), r(3, H)), ("unbatched-3D-hx", r(5, I), r(L, 1, H)),
    ("hx-layers", r(5, 3, I), r(1, 3, H)), ("hx-batch", r(5, 3, I), r(L, 2, H)),
    ("hx-size", r(5, 3, I), r(L, 3, H + 1)), ("unbatched-hx-size", r(5, I), r(L, H + 1)),
    ("T0", r(0, 3, I), None), ("hx-dtype", r(5, 3, I), r(L, 3, H, dtype=torch.float64)),
]
LSTM_CASES = [
    ("1D", r(5), None), ("4D", r(1, 2, 3, I), None), ("input-size", r(5, 3, 5), None),
    ("input-dtype", r(5, 3, I, dtype=torch.float64), None),
    ("batched-2D-hx", r(5, 3, I), (r(L, 3, H), r(3, H))), ("unbatched-3D-hx", r(5, I), (r(L, 1, H), r(L, 1, H))),
    ("h-size", r(5, 3, I), (r(L, 3, H + 1), r(L, 3, H))), ("c-size", r(5, 3, I), (r(L, 3, H), r(L, 2, H))),
    ("unbatched-c-size", r(5, I), (r(L, H), r(L, H + 1))),
    ("three-states", r(5, 3, I), (r(L, 3, H),) * 3), ("T0", r(0, 3, I), None),
]


@pytest.mark.parametrize("x,hx", [c[1:] for c in RNN_CASES], ids=[c[0] for c in RNN_CASES])
@pytest.mark.parametrize("name", ["RNN", "GRU"])
def test_one_state_forward_errors_equal_torch(name, x, hx):
    fast, ref = pair(name)
    want = outcome(lambda: ref(x, hx))
    assert want[0] != "ok"
    assert outcome(lambda: fast(x, hx)) == want


@pytest.mark.parametrize("x,hx", [c[1:] for c in LSTM_CASES], ids=[c[0] for c in LSTM_CASES])
def test_lstm_forward_errors_equal_torch(x, hx):
    fast, ref = pair("LSTM")
    want = outcome(lambda: ref(x, hx))
    assert want[0] != "ok"
    assert outcome(lambda: fast(x, hx)) == want


def test_batch_first_hidden_state_is_not_batch_first():
    fast, ref = pair("RNN", batch_first=True)
    x, hx = r(3, 5, I), r(L, 5, H)  # hx [L, B, H] even with batch_first: torch rejects it
    want = outcome(lambda: ref(x, hx))
    assert want[0] is RuntimeError
    assert outcome(lambda: fast(x, hx)) == want


def test_lstm_hx_dtype_mismatch_is_a_clear_runtime_error():
    fast, _ = pair("LSTM")
    hx = (r(L, 3, H, dtype=torch.float64), r(L, 3, H))
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype, but got Double and Float"):
        fast(r(5, 3, I), hx)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_packed_input_size_is_checked(name):
    """torch's RNN checks this; torch's LSTM does not (and computes garbage). fastrnn checks both."""
    fast, ref = pair(name)
    packed = pack_sequence([r(3, I + 1), r(2, I + 1)])
    msg = f"input.size(-1) must be equal to input_size. Expected {I}, got {I + 1}"
    with pytest.raises(RuntimeError) as info:
        fast(packed)
    assert str(info.value) == msg
    if name != "LSTM":
        assert outcome(lambda: ref(packed)) == (RuntimeError, msg)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_packed_hidden_size_is_checked(name):
    fast, _ = pair(name)
    packed = pack_sequence([r(2, I), r(3, I)], enforce_sorted=False)
    h = r(L, 3, H)
    hx = (h, r(L, 2, H)) if name == "LSTM" else h
    want = "Expected hidden[0] size (2, 2, 6), got [2, 3, 6]" if name == "LSTM" else \
        "Expected hidden size (2, 2, 6), got [2, 3, 6]"
    with pytest.raises(RuntimeError) as info:
        fast(packed, hx)
    assert str(info.value) == want


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16], ids=["f32-in", "bf16-in"])
def test_autocast_skips_the_dtype_check_and_runs_in_the_autocast_dtype_like_torch(name, in_dtype,
                                                                                   torch_or_reference):
    """Where torch.nn's LSTM raises under autocast on this CPU (no AVX-512), against the float64
    reference: the point is that fastrnn runs, in bf16, without a dtype error. (torch's CPU GRU does
    only its GEMMs in bf16 and returns its state's dtype: float32 for float32 input.)"""
    fast, ref = pair(name, bidirectional=True)
    x = r(5, 3, I, dtype=in_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = fast(x), torch_or_reference(ref, x)
    assert got[0].dtype == (in_dtype if name == "GRU" else torch.bfloat16)
    assert want.result[0].dtype == (got[0].dtype if want.torch_error is None else torch.float64)
    assert_close(got[0], want.result[0], name="output", dtype=torch.bfloat16, T=5)
