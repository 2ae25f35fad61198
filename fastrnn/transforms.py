"""What an opaque recurrence op needs to behave under autograd's and torch.func's transforms.

The fused kernels (fastrnn/library.py) and torch's own RNN calls when traced or vmapped
(fastrnn/aten.py) run as `torch.library` custom ops with an autograd formula. Calling such an op
directly has three defects: torch.func's grad / jacrev / vmap refuse its generated
autograd.Function (it has no setup_context), forward-mode AD sees no input requiring grad and
silently returns zero tangents, and a second derivative through a formula built on opaque ops
would be zero too. `transformable` wraps the op in an autograd.Function that fixes all three, and
`call` runs it (or, under torch.compile, the op itself: Dynamo refuses an autograd.Function with a
jvp, and traces the same formula registered on the op).
"""
import functools

import torch

from .backends import BackendError

__all__ = ["first_order", "transformable", "call"]


def _no_forward_ad(backend):
    raise BackendError(f"backend={backend!r} has no forward-mode AD (torch.func.jvp, jacfwd, hessian, "
                       "torch.autograd.forward_ad); use backend='reference'")


def _no_double_backward(backend):
    raise RuntimeError(f"backend={backend!r} has no double backward (its backward is an opaque op); "
                       "use backend='reference' for higher-order gradients")


class _FirstOrder(torch.autograd.Function):
    """Identity on the gradients an opaque backward returns (after `n` anchors, the tensors they
    were computed from), whose own backward and jvp raise."""
    generate_vmap_rule = True

    @staticmethod
    def forward(backend, n, *tensors):
        return tuple(g.view_as(g) for g in tensors[n:])

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.backend = inputs[0]

    @staticmethod
    def backward(ctx, *_):
        _no_double_backward(ctx.backend)

    @staticmethod
    def jvp(ctx, *_):
        _no_forward_ad(ctx.backend)


def first_order(backend):
    """Decorate an autograd formula `backward(ctx, *grads) -> tuple` so that it runs without
    recording a graph. When a graph of the backward is wanted (create_graph=True; torch.func.grad
    and jacrev always ask for one) and what it read requires grad, its results are tied to that
    through _FirstOrder, so differentiating them again raises instead of giving zeros."""
    def decorate(backward):
        @functools.wraps(backward)
        def formula(ctx, *grads):
            record = torch.is_grad_enabled()
            with torch.no_grad():
                result = backward(ctx, *grads)
            anchors = [t for t in (*ctx.saved_tensors, *grads) if t is not None and t.requires_grad]
            if not (record and anchors):
                return result
            present = [g for g in result if g is not None]
            marked = iter(_FirstOrder.apply(backend, len(anchors), *anchors, *present))
            return tuple(None if g is None else next(marked) for g in result)
        return formula
    return decorate


def transformable(op, setup, backward, backend):
    """`op` as an autograd.Function with the `setup` and `backward` registered on it, a jvp that
    raises, and a vmap rule generated from the forward (custom ops loop over the vmapped dim)."""
    return type(f"{op._name}_function", (torch.autograd.Function,), dict(
        forward=staticmethod(lambda *args: op(*args)), setup_context=staticmethod(setup),
        backward=staticmethod(backward), jvp=staticmethod(lambda ctx, *_: _no_forward_ad(backend)),
        generate_vmap_rule=True))


def call(function, op, *args):
    """Run `op` on `args`: itself under torch.compile, else through its `transformable` Function."""
    return op(*args) if torch.compiler.is_compiling() else function.apply(*args)
