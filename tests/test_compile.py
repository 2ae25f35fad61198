"""torch.compile(fullgraph=True) and torch.export over fastrnn modules.

Most compiled runs use the "aot_eager" compiler backend: it runs Dynamo (fullgraph: any graph
break fails) and AOTAutograd (the custom ops' fake implementations and autograd formula) exactly
as Inductor would, in a second. One test per backend goes through Inductor itself (generated C++
on CPU, the fastrnn ops as extern calls), about 10 s each.

No switch is set: Dynamo refuses instances of torch.nn.RNN/LSTM/GRU unless the global
torch._dynamo.config.allow_rnn is on, and fastrnn's modules subclass torch.nn.RNNBase instead,
so they compile with Dynamo's defaults (asserted by the `dynamo_defaults` fixture).
A PackedSequence compiles as an input of the compiled module on every backend; packing inside the
compiled code does not (Dynamo skips pack_padded_sequence itself).

Tiny sizes alone once hid a failure: at realistic sizes (H >= 64, T >= 32) oneDNN runs torch's CPU
LSTM, and compiling it for training broke. So every module and backend is also compiled for
training at such sizes, with outputs and every gradient compared with eager's.
"""
import pytest
import torch
from torch._dynamo.backends.debugging import aot_eager
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import cellspec
from fastrnn.testing import tolerances

CASES = [  # (cell, module kwargs)
    ("LSTM", dict(num_layers=1, bidirectional=True, proj_size=3)),
    ("RNN", dict(num_layers=1, bidirectional=True, nonlinearity="relu")),
    ("GRU", dict(num_layers=2, bidirectional=True)),
]
CASE_IDS = ["LSTM-L1-bi-P3", "RNN-L1-bi-relu", "GRU-L2-bi"]
T, B, I, H = 3, 2, 3, 5


@pytest.fixture(autouse=True)
def dynamo_defaults():
    assert torch._dynamo.config.allow_rnn is False  # nobody (fastrnn included) flipped it
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_torch_lstm_still_refused_so_the_switch_is_untouched():
    """Importing and compiling fastrnn leaves torch.nn.LSTM's compile behaviour as torch ships it."""
    model = torch.nn.LSTM(I, H)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="allow_rnn"):
        torch.compile(model, fullgraph=True, backend="eager")(torch.randn(T, B, I))


def _recording_backend(graphs):
    """A compiler backend that keeps each Dynamo graph, then compiles it like aot_eager."""
    def backend(gm, example_inputs):
        graphs.append(gm)
        return aot_eager(gm, example_inputs)
    return backend


def _fastrnn_ops(graphs):
    return [str(n.target) for g in graphs for n in g.graph.nodes if "fastrnn" in str(n.target)]


def _assert_compiled_matches_eager(model, compiled, x=None, steps=T):
    """Outputs, and gradients of x and every parameter under one random cotangent, agree (float32,
    within the oracle's tolerances after `steps` steps)."""
    x = torch.randn(T, B, I, requires_grad=True) if x is None else x
    params = [x, *model.parameters()]
    leaves_e = torch.utils._pytree.tree_leaves(model(x))
    leaves_c = torch.utils._pytree.tree_leaves(compiled(x))
    cots = [torch.randn_like(t) for t in leaves_e]
    grads_e = torch.autograd.grad(leaves_e, params, cots)
    grads_c = torch.autograd.grad(leaves_c, params, cots)
    atol, rtol = tolerances(torch.float32, steps)
    for e, c in zip([*leaves_e, *grads_e], [*leaves_c, *grads_c], strict=True):
        torch.testing.assert_close(c, e, atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend", ["triton", "reference", "aten"])
@pytest.mark.parametrize("cell,kwargs", CASES, ids=CASE_IDS)
def test_compiled_module_matches_eager(cell, kwargs, backend):
    torch.manual_seed(0)
    model = getattr(fastrnn, cell)(I, H, backend=backend, **kwargs)
    graphs = []
    compiled = torch.compile(model, fullgraph=True, backend=_recording_backend(graphs))
    _assert_compiled_matches_eager(model, compiled)
    assert len(graphs) == 1
    ops = _fastrnn_ops(graphs)
    # one opaque op per layer (both directions), nothing traced inside it; the reference is torch ops
    fwd = {"triton": f"fastrnn.{cellspec.of(cell).name}_fwd.default",
           "aten": "fastrnn.aten_layer.default", "reference": None}[backend]
    assert ops == ([fwd] * kwargs["num_layers"] if fwd else [])


# Realistic sizes. The fused kernels run through Triton's interpreter here, which is slow, so
# "triton" gets the smallest realistic shape and one layer; torch's CPU paths get two layers.
REALISTIC = {"triton": dict(T=32, B=4, I=64, H=64, num_layers=1),
             "aten": dict(T=50, B=8, I=64, H=128, num_layers=2),
             "auto": dict(T=50, B=8, I=64, H=128, num_layers=2),
             "reference": dict(T=32, B=8, I=64, H=128, num_layers=2)}


@pytest.mark.parametrize("backend", ["auto", "aten", "reference", "triton"])
@pytest.mark.parametrize("cell", ["LSTM", "RNN", "GRU"])
def test_compiled_training_at_realistic_size_matches_eager(cell, backend):
    torch.manual_seed(0)
    size = REALISTIC[backend]
    model = getattr(fastrnn, cell)(size["I"], size["H"], num_layers=size["num_layers"], batch_first=True,
                                   bidirectional=True, backend=backend).train()
    x = torch.randn(size["B"], size["T"], size["I"], requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    _assert_compiled_matches_eager(model, compiled, x, steps=size["T"])


@pytest.mark.parametrize("backend", ["auto", "aten", "reference", "triton"])
@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
def test_compiled_cell_training_at_realistic_size_matches_eager(cell, backend):
    torch.manual_seed(0)
    model = getattr(fastrnn, cell)(64, 128, backend=backend).train()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    _assert_compiled_matches_eager(model, compiled, torch.randn(16, 64, requires_grad=True))


def test_readme_compile_example_trains_under_inductor():
    """The README's example, as written, with gradients on: it once failed on CPU at this size."""
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(64, 128, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(8, 50, 64, requires_grad=True)
    _assert_compiled_matches_eager(lstm, torch.compile(lstm, fullgraph=True), x, steps=50)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("backend", ["triton", "reference", "aten"])
def test_inductor_compiled_module_matches_eager(backend):
    """The default compiler: Inductor generates and builds the graph's code (C++ on CPU)."""
    torch.manual_seed(0)
    model = fastrnn.LSTM(I, H, backend=backend, **CASES[0][1])
    _assert_compiled_matches_eager(model, torch.compile(model, fullgraph=True))


@pytest.mark.parametrize("backend", ["triton", "reference", "aten"])
@pytest.mark.parametrize("cell", ["RNNCell", "LSTMCell", "GRUCell"])
def test_compiled_cell_matches_eager(cell, backend):
    torch.manual_seed(0)
    model = getattr(fastrnn, cell)(I, H, backend=backend)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    _assert_compiled_matches_eager(model, compiled, torch.randn(B, I, requires_grad=True))


def test_compiled_triton_with_hidden_state_and_no_grad():
    """Inference path (no saved activations) and a user-given (h0, c0) under compile."""
    torch.manual_seed(0)
    model = fastrnn.LSTM(I, H, batch_first=True, backend="triton")
    x, hx = torch.randn(B, T, I), (torch.randn(1, B, H), torch.randn(1, B, H))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        want, got = model(x, hx), compiled(x, hx)
    for e, c in zip(torch.utils._pytree.tree_leaves(want), torch.utils._pytree.tree_leaves(got)):
        torch.testing.assert_close(c, e, atol=1e-6, rtol=1e-5)


class _Tagger(torch.nn.Module):
    """A small model around a fastrnn LSTM or GRU: batch-first sequence in, per-step logits out."""

    def __init__(self, backend, cell="LSTM"):
        super().__init__()
        self.rnn = getattr(fastrnn, cell)(I, H, num_layers=2, bidirectional=True, batch_first=True, backend=backend)
        self.head = torch.nn.Linear(2 * H, 2)

    def forward(self, x):
        out, hidden = self.rnn(x)
        return self.head(out), hidden[0] if isinstance(hidden, tuple) else hidden


@pytest.mark.parametrize("backend", ["triton", "reference", "aten"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_compiled_packed_input_matches_eager(cell, backend):
    """PackedSequence in (sorted and unsorted, batch sizes changing between calls), output, h_n,
    c_n and every gradient equal eager's."""
    torch.manual_seed(0)
    model = getattr(fastrnn, cell)(I, H, bidirectional=True, backend=backend)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    params = list(model.parameters())
    leaves = (lambda out, hidden: [out.data, *torch.utils._pytree.tree_leaves(hidden)])
    for lengths, enforce_sorted in (([3, 1, 2], False), ([3, 2], True), ([2, 3, 3, 1], False)):
        x = torch.randn(T, len(lengths), I, requires_grad=True)
        packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
        (out_e, hidden_e), (out_c, hidden_c) = model(packed), compiled(packed)
        assert torch.equal(out_c.batch_sizes, out_e.batch_sizes)
        leaves_e, leaves_c = leaves(out_e, hidden_e), leaves(out_c, hidden_c)
        cots = [torch.randn_like(t) for t in leaves_e]
        grads_e = torch.autograd.grad(leaves_e, [x, *params], cots, retain_graph=True)  # packing is shared
        grads_c = torch.autograd.grad(leaves_c, [x, *params], cots)
        for e, c in zip([*leaves_e, *grads_e], [*leaves_c, *grads_c], strict=True):
            torch.testing.assert_close(c, e, atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:The tensor attributes self.rnn._flat_weights")
@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_export_for_inference_runs(cell, backend):
    torch.manual_seed(0)
    model = _Tagger(backend, cell).eval()
    x = torch.randn(B, T, I)
    program = torch.export.export(model, (x,))
    ops = [str(n.target) for n in program.graph.nodes if "fastrnn" in str(n.target)]
    fwd = f"fastrnn.{cellspec.of(cell).name}_fwd.default"
    assert ops == ([fwd] * 2 if backend == "triton" else [])  # 2 layers
    x2 = torch.randn(B, T, I)  # the program runs on new data, not only on what it was traced with
    with torch.no_grad():
        want = model(x2)
    got = program.module()(x2)
    for e, c in zip(want, got):
        torch.testing.assert_close(c, e, atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:The tensor attributes self.rnn._flat_weights")
@pytest.mark.parametrize("backend,dynamic", [("triton", (0, 1)), ("reference", (0,))],
                         ids=["triton-batch-and-time", "reference-batch"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_export_with_dynamic_shapes(cell, backend, dynamic):
    """The triton op is opaque, so batch and time both stay symbolic; the reference loops over
    time in Python, so its export specialises T (as torch.nn's does) and only B is dynamic."""
    torch.manual_seed(0)
    model = _Tagger(backend, cell).eval()
    dims = {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("time", max=256)}
    program = torch.export.export(model, (torch.randn(B, T, I),),
                                  dynamic_shapes=({d: dims[d] for d in dynamic},))
    x2 = torch.randn(B + 2, T + 3 if 1 in dynamic else T, I)
    with torch.no_grad():
        want = model(x2)
    for e, c in zip(want, program.module()(x2)):
        torch.testing.assert_close(c, e, atol=1e-6, rtol=1e-5)
