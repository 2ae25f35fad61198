"""`check_module`: prove an RNN / LSTM / GRU implementation equal to the float64 reference.

For every case of the battery (see cases.py) the module under test is built from the case's
torch.nn constructor arguments, its parameters are refilled with seeded random values, and the same
values (in float64) drive `fastrnn.functional.rnn_stack(..., backend="reference")`. Outputs, final
states and the gradients of x, h0, c0 and every parameter (under the same random cotangents on every
output) are then compared.
"""
import math

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from .. import cellspec
from ..functional import rnn_stack
from .cases import check_kind, select_cases
from .compare import assert_close, check_dtype, check_tolerance, tolerances
from .outputs import rnn_leaves
from .report import CaseResult, Report, TensorResult, errors

__all__ = ["check_module", "run_case", "module_kind"]


_FACTORY = ("a factory called like torch.nn.RNN / torch.nn.LSTM / torch.nn.GRU: "
            "factory(input_size, hidden_size, **kwargs) -> torch.nn.Module")


def _label(factory):
    return getattr(factory, "__qualname__", None) or repr(factory)


class _NotAFactory(TypeError):
    """The factory is not callable or built something other than an nn.Module: a usage error that
    no case can report as a failure of the module."""


def _build(factory, *args, **kwargs):
    """factory(*args, **kwargs), which must be a torch.nn.Module (_NotAFactory otherwise)."""
    if not callable(factory):
        raise _NotAFactory(f"check_module needs {_FACTORY}; got {type(factory).__name__} {factory!r}")
    module = factory(*args, **kwargs)
    if not isinstance(module, torch.nn.Module):
        raise _NotAFactory(f"{_label(factory)} returned {type(module).__name__}, not a torch.nn.Module; "
                        f"check_module needs {_FACTORY}")
    return module


_KINDS = "'RNN', 'LSTM' or 'GRU'"


def _a(kind):
    return f"{'a' if kind == 'GRU' else 'an'} {kind}"


def _kind_of(module):
    """'RNN', 'LSTM', 'GRU' or None (cannot tell) for a built module: its `mode`, else the number of
    gate rows of weight_ih_l0 (module built with hidden_size 3). Raises ValueError for another cell."""
    mode = getattr(module, "mode", None)
    if isinstance(mode, str):
        try:
            return cellspec.of(mode).torch_name
        except ValueError:
            raise ValueError(f"the factory builds a {type(module).__name__} with mode {mode!r}; check_module "
                             "checks the Elman RNN (mode 'RNN_TANH' or 'RNN_RELU'), the LSTM (mode 'LSTM') "
                             "and the GRU (mode 'GRU') only") from None
    weight = dict(module.named_parameters()).get("weight_ih_l0")
    rows = {cell.gates * 3: cell.torch_name for cell in cellspec.CELLS}
    return rows.get(None if weight is None else weight.shape[0])


def _resolve_kind(factory, kind=None):
    """`kind` checked against what the factory builds, or read from it when None."""
    if kind is not None:
        check_kind(kind)
    built = _kind_of(_build(factory, 2, 3))
    if kind is None and built is None:
        raise TypeError(f"cannot tell whether {_label(factory)} builds an RNN, an LSTM or a GRU: it has no "
                        f"`mode` attribute and no torch.nn-style weight_ih_l0; pass kind={_KINDS}")
    if kind is not None and built is not None and built != kind:
        raise ValueError(f"kind={kind!r}, but {_label(factory)} builds {_a(built)}")
    return kind or built


def module_kind(factory):
    """'RNN', 'LSTM' or 'GRU': what `factory(input_size, hidden_size)` builds (read from its `mode`,
    else from the number of gate rows of weight_ih_l0). TypeError when it builds no nn.Module or the
    kind cannot be told, ValueError when it builds another cell."""
    return _resolve_kind(factory)


def _check_options(dtype, device, seed, atol, rtol):
    """TypeError / ValueError, saying what is accepted, for options the battery cannot use."""
    check_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    check_tolerance("atol", atol)
    check_tolerance("rtol", rtol)
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise TypeError(f"device must be a str or torch.device ('cpu', 'cuda', 'cuda:1'), got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', ...): {exc}") from None
    if dev.type == "meta":
        raise ValueError("device 'meta' holds no values, so there is nothing to compare; pass a real device")
    try:
        torch.empty(1, device=dev)
    except Exception as exc:  # whatever the device's runtime says is the reason
        raise ValueError(f"device {device!r} cannot hold tensors here: {type(exc).__name__}: {exc}") from None


def _form_error(actual, case):
    """What is wrong with `actual` as torch.nn's result for `case`, or '' when nothing is."""
    output_type = PackedSequence if case.form == "packed" else torch.Tensor
    if not (isinstance(actual, tuple) and len(actual) == 2):
        size = f" of {len(actual)}" if isinstance(actual, (tuple, list)) else ""
        return f"{type(actual).__name__}{size}"
    out, hidden = actual
    if not isinstance(out, output_type):
        return f"an output of type {type(out).__name__} (expected {output_type.__name__})"
    if case.cell.has_c:
        if not (isinstance(hidden, tuple) and len(hidden) == 2 and all(isinstance(h, torch.Tensor) for h in hidden)):
            return f"a hidden state of type {type(hidden).__name__} (expected a tuple (h_n, c_n) of tensors)"
    elif not isinstance(hidden, torch.Tensor):
        return f"a hidden state of type {type(hidden).__name__} (expected the tensor h_n)"
    return ""


def _param_names(case):
    """The torch.nn parameter names of `case`, in torch's order."""
    names = []
    for layer in range(case.num_layers):
        for sfx in ("", "_reverse")[:case.num_directions]:
            names += [f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"]
            names += [f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"] if case.bias else []
            names += [f"weight_hr_l{layer}{sfx}"] if case.proj_size else []
    return names


def _rand(shape, gen, dtype, scale=1.0):
    """Uniform(-scale, scale) float64 values that are exactly representable in `dtype`."""
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    return x.to(dtype).to(torch.float64)


def _inputs(case, gen, dtype):
    """float64 x: [T, B, I], h0: [L*D, B, R], c0: [L*D, B, H] (None unless case.hx), lengths: [B]
    (None unless packed: unsorted, the longest equal to T)."""
    B = 1 if case.form == "unbatched" else case.B
    LD = case.num_layers * case.num_directions
    x = _rand((case.T, B, case.input_size), gen, dtype, 2.0)
    h0 = _rand((LD, B, case.out_size), gen, dtype) if case.hx else None
    c0 = _rand((LD, B, case.hidden_size), gen, dtype) if case.hx and case.cell.has_c else None
    lengths = None
    if case.form == "packed":
        lengths = torch.tensor([max(1, case.T - 2), case.T, 1][:B] + [case.T] * max(0, B - 3))
    return x, h0, c0, lengths


def _to_form(case, out, h_n, c_n, lengths):
    """Reference results (time-major, batched) -> the form the module returns for this case."""
    if case.form == "packed":
        out = pack_padded_sequence(out, lengths, enforce_sorted=False)
    elif case.form == "unbatched":
        out, h_n = out[:, 0], h_n[:, 0]
        c_n = None if c_n is None else c_n[:, 0]
    elif case.batch_first:
        out = out.transpose(0, 1)
    return out, case.cell.hx((h_n, c_n))


def _module_input(case, x, lengths):
    """x: [T, B, I] leaf -> what the module is called with (a view, so gradients reach x)."""
    if case.form == "packed":
        return pack_padded_sequence(x, lengths, enforce_sorted=False)
    if case.form == "unbatched":
        return x[:, 0]
    return x.transpose(0, 1) if case.batch_first else x


def _leaf(t, dtype, device):
    return None if t is None else t.to(device=device, dtype=dtype).requires_grad_()


def _run_reference(case, weights64, x, h0, c0, lengths):
    """The float64 reference on CPU; returns (result in the module's form, grad inputs)."""
    x_r, h0_r, c0_r = (_leaf(t, torch.float64, "cpu") for t in (x, h0, c0))
    LD, B = case.num_layers * case.num_directions, x.shape[1]
    h = h0_r if h0_r is not None else torch.zeros(LD, B, case.out_size, dtype=torch.float64)
    c = c0_r if c0_r is not None else torch.zeros(LD, B, case.hidden_size, dtype=torch.float64)
    weights = []
    for layer in range(case.num_layers):
        for sfx in ("", "_reverse")[:case.num_directions]:
            get = lambda n, k=f"_l{layer}{sfx}": weights64.get(n + k)
            w = (get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"))
            weights.append(w + (get("weight_hr"),) if case.cell.projects else w)
    result = rnn_stack(x_r, case.cell.hx((h, c)), weights, mode=case.mode,
                       num_layers=case.num_layers, bidirectional=case.bidirectional,
                       dropout=case.dropout, training=False, lengths=lengths, backend="reference")
    out, hidden = result
    h_n, c_n = (*case.cell.states_of(hidden), None)[:2]
    return _to_form(case, out, h_n, c_n, lengths), (x_r, h0_r, c0_r)


def _compare(result, name, actual, expected, atol, rtol, dtype, device):
    if actual is None:
        result.tensors.append(TensorResult(name, math.inf, math.inf, False,
                                           f"{name}: is None, expected a tensor"))
        return
    if actual.shape != expected.shape:
        result.tensors.append(TensorResult(name, math.inf, math.inf, False,
                                           f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"))
        return
    if actual.dtype != dtype or actual.device.type != device.type:
        result.tensors.append(TensorResult(name, math.inf, math.inf, False,
                                           f"{name}: {actual.dtype} on {actual.device}, expected {dtype} on "
                                           f"{device} (the module's dtype and device)"))
        return
    max_abs, max_rel = errors(actual, expected)
    try:
        assert_close(actual, expected, name=name, atol=atol, rtol=rtol)
        result.tensors.append(TensorResult(name, max_abs, max_rel, True))
    except AssertionError as exc:
        result.tensors.append(TensorResult(name, max_abs, max_rel, False, str(exc)))


def run_case(factory, case, *, dtype=torch.float64, device="cpu", seed=0, atol=None, rtol=None):
    """Run one case of the battery; returns a CaseResult (a module that raises or differs fails
    the case). Raises TypeError when the factory builds no nn.Module or the module's result is not
    in torch.nn's form ((output, h_n) / (output, (h_n, c_n)), the output a PackedSequence for
    packed input), TypeError / ValueError for options it cannot use."""
    _check_options(dtype, device, seed, atol, rtol)
    device = torch.device(device)
    result = CaseResult(case.id)
    gen = torch.Generator().manual_seed(seed)
    # Errors accumulate along time and through the layers; gradients also scale with their size.
    base_atol, base_rtol = tolerances(dtype, case.T * case.num_layers)
    atol = base_atol if atol is None else atol
    rtol = base_rtol if rtol is None else rtol
    stage = "building the module"
    try:
        module = _build(factory, case.input_size, case.hidden_size, **case.module_kwargs())
        stage = "moving the module to its device and dtype"
        module = module.to(device=device, dtype=dtype)
        module.train(not case.dropout)  # a dropout case runs in eval mode, where dropout must be off
        params = dict(module.named_parameters())
        names = _param_names(case)
        missing = [n for n in names if n not in params]
        if missing:
            raise AssertionError(f"module has no parameter(s) {missing} (torch.nn naming)")
        weights64 = {}
        with torch.no_grad():
            for n in names:
                values = _rand(params[n].shape, gen, dtype, 1 / math.sqrt(case.hidden_size))
                params[n].copy_(values)
                weights64[n] = values.clone().requires_grad_()
        x, h0, c0, lengths = _inputs(case, gen, dtype)
        expected, ref_inputs = _run_reference(case, weights64, x, h0, c0, lengths)

        x_m, h0_m, c0_m = (_leaf(t, dtype, device) for t in (x, h0, c0))
        hx = None
        if case.hx:
            states = (h0_m, c0_m) if case.form != "unbatched" else (h0_m[:, 0], None if c0_m is None else c0_m[:, 0])
            hx = case.cell.hx(states)
        stage = "forward"
        actual = module(_module_input(case, x_m, lengths), hx)
    except _NotAFactory:
        raise
    except Exception as exc:  # a module that cannot run a case fails that case, with the reason
        result.error = f"{stage} raised {type(exc).__name__}: {exc}"
        return result
    wrong = _form_error(actual, case)
    if wrong:
        want = "(output, (h_n, c_n))" if case.cell.has_c else "(output, h_n)"
        raise TypeError(f"{_label(factory)}'s forward returned {wrong} in case {case.id}; check_module "
                        f"accepts torch.nn's result form: a tuple {want} of tensors, the output a "
                        "PackedSequence when the input is one")

    try:
        leaves = rnn_leaves(actual, expected)
    except AssertionError as exc:
        result.error = str(exc)
        return result
    for name, a, e in leaves:
        _compare(result, name, a, e, atol, rtol, dtype, device)
    if not result.passed:
        return result  # gradients of wrong outputs would only repeat the same failure

    # Backward: the same random cotangent on every output, for both sides.
    cot = [_rand(e.shape, gen, torch.float64) for _, _, e in leaves]
    wrt_m = [x_m, h0_m, c0_m] + [params[n] for n in names]
    wrt_r = list(ref_inputs) + [weights64[n] for n in names]
    grad_names = ["x", "h0", "c0"] + names
    keep = [i for i, t in enumerate(wrt_r) if t is not None]
    try:
        loss_m = sum((a.to(device=device, dtype=torch.float64) * g.to(device)).sum()
                     for (_, a, _), g in zip(leaves, cot))
        grads_m = torch.autograd.grad(loss_m, [wrt_m[i] for i in keep], allow_unused=True)
    except Exception as exc:
        result.error = f"backward raised {type(exc).__name__}: {exc}"
        return result
    loss_r = sum((e * g).sum() for (_, _, e), g in zip(leaves, cot))
    grads_r = torch.autograd.grad(loss_r, [wrt_r[i] for i in keep], allow_unused=True)
    for i, g_m, g_r in zip(keep, grads_m, grads_r):
        g_r = torch.zeros_like(wrt_r[i]) if g_r is None else g_r
        scale = max(1.0, g_r.abs().max().item())
        _compare(result, f"grad {grad_names[i]}", g_m, g_r, atol * scale, rtol, dtype, device)
    return result


def check_module(factory, *, dtype=torch.float64, device="cpu", cases=None, quick=False, seed=0,
                 atol=None, rtol=None, kind=None, name=None, raise_on_failure=True):
    """Run the oracle's battery on `factory` and compare everything against the float64 reference.

    factory: called like torch.nn.RNN / LSTM / GRU, `factory(input_size, hidden_size, **kwargs)`
        (torch.nn.LSTM, fastrnn.GRU, functools.partial(fastrnn.RNN, backend="triton"), a user class).
    dtype, device: what the module runs in (the reference always runs float64 on CPU).
        dtype: float64, float32, float16 or bfloat16 (the ones `tolerances` knows).
    cases: None (the whole battery, or about half with quick=True), a `Case`, a substring of case
        ids ('packed', 'LSTM-T1'), or a non-empty list of those; every substring must match.
    atol, rtol: override `tolerances(dtype, T * num_layers)` (finite, >= 0); gradient atol scales
        with the gradient's largest value.
    kind: 'RNN', 'LSTM' or 'GRU' when the factory's product does not say (see `module_kind`); when
        it does, the two must agree.

    Returns a Report (per case: max abs and rel error, pass or fail); raises AssertionError listing
    every failing case and what differed unless raise_on_failure=False. Raises TypeError or
    ValueError, saying what is accepted, for arguments it cannot use (a selection of no case, a
    factory that builds no nn.Module, a result not in torch.nn's form, an unknown dtype or device).
    """
    _check_options(dtype, device, seed, atol, rtol)
    for flag, value in (("quick", quick), ("raise_on_failure", raise_on_failure)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")
    kind = _resolve_kind(factory, kind)  # builds one module: a factory that builds none fails here
    selected = select_cases(kind, cases, quick)
    wrong = [c.id for c in selected if c.kind != kind]
    if wrong:
        raise ValueError(f"cases {wrong} do not fit a {kind} factory")
    label = name or _label(factory)
    report = Report(label, kind, dtype, str(device))
    for i, case in enumerate(selected):
        report.results.append(run_case(factory, case, dtype=dtype, device=device, seed=seed + i,
                                       atol=atol, rtol=rtol))
    if raise_on_failure and not report.passed:
        raise AssertionError(report.failure_message())
    return report
