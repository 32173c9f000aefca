"""How many aten ops a train step dispatches: a device-independent proxy for kernel launches.

On a fast GPU a DyRep block is bound by kernel launches and memory traffic more than by its
multiply-adds, so the number of ops one forward + backward dispatches says how it will scale there,
measured on any machine. :func:`count_ops` counts every aten op that reaches PyTorch's dispatcher
under a ``TorchDispatchMode`` (the ops autograd runs in the backward included). Views (``func.is_view``)
are left out: they launch nothing. Everything else is counted, allocation-only ops (``empty``) too,
so the count is an upper bound on launches; :data:`NO_KERNEL` names those, for a second count.
"""
from collections import Counter
from typing import Callable, Optional

from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

#: ops that allocate or relabel memory and launch no kernel
NO_KERNEL = frozenset({'aten.empty', 'aten.empty_like', 'aten.empty_strided', 'aten.new_empty',
                       'aten._unsafe_view'})


class _OpCounter(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> Counter:
    """``{op name: count}`` of the aten ops ``fn()`` dispatches (views left out)."""
    with _OpCounter() as counter:
        fn()
    return counter.ops


def kernel_ops(ops: Counter) -> int:
    """The ops of ``ops`` that may launch a kernel (those not in :data:`NO_KERNEL`)."""
    return sum(n for name, n in ops.items() if name not in NO_KERNEL)


def train_step_ops(module: nn.Module, x: Tensor, forward: Optional[Callable[[Tensor], Tensor]] = None) -> Counter:
    """The ops of one training forward + backward of ``module`` (or of ``forward(x)``) on ``x``, with a
    sum as the loss. Gradients are cleared first (accumulating into an existing ``.grad`` adds ops) and
    again after; ``x`` keeps its ``requires_grad`` (a block inside a network also sends a gradient
    to its input: one addition per extra reader of ``x``)."""
    forward = forward or module

    def step():
        forward(x).sum().backward()

    for p in module.parameters():
        p.grad = None
    if x.grad is not None:
        x.grad = None
    ops = count_ops(step)
    for p in module.parameters():
        p.grad = None
    x.grad = None
    return ops


__all__ = ['NO_KERNEL', 'count_ops', 'kernel_ops', 'train_step_ops']
