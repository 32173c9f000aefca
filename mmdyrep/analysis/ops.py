"""How many aten ops a train step dispatches: a device-independent proxy for kernel launches.

On a fast GPU a DyRep block is bound by kernel launches and memory traffic more than by its
multiply-adds, so the number of ops one forward + backward dispatches says how it will scale there,
measured on any machine. :func:`count_ops` counts every aten op that reaches PyTorch's dispatcher
under a ``TorchDispatchMode`` (the ops autograd runs in the backward included). Views (``func.is_view``)
are left out: they launch nothing. Everything else is counted, allocation-only ops (``empty``) too,
so the count is an upper bound on launches; :data:`NO_KERNEL` names those, for a second count.

Launches are not all a GPU pays: where a step is bound by memory bandwidth (training-mode BNs,
additions, concatenations: a few multiply-adds per element), its time follows the bytes it moves. The
same counter adds up, per op, the bytes of every tensor it reads (its tensor arguments) and writes (its
outputs): the traffic of an unfused execution, each tensor read or written once per op, with no cache
(:func:`count`; views and :data:`NO_KERNEL` ops move nothing). Convolutions count their input, weight and
output, though a GPU may be bound by their multiply-adds instead.

A third count is for memory: the bytes of the distinct storages autograd saves for the backward
(``torch.autograd.graph.saved_tensors_hooks``), all alive at the end of the forward: the activation
memory of a train step, beside its weights, gradients and optimizer state (:func:`train_step_counts`
leaves out the module's parameters and buffers and the input, which live anyway).

A dispatched op may launch more than one kernel. On CUDA, a convolution makes its input and weight
contiguous (in the memory format cuDNN picks: channels-last when the input or the weight is) with a
copy each where they are not, runs cuDNN, which takes no bias, then adds the bias in a second kernel;
its backward makes the output gradient and the weight contiguous, and the input too where the weight's
gradient is asked for, and sums the output gradient for the bias' (PyTorch's
``aten/src/ATen/native/Convolution.cpp``). These kernels never reach the dispatcher.
:func:`hidden_kernels` names them from the op's arguments, and :func:`count` adds them up apart
(``Counts.hidden``, ``Counts.hidden_bytes``). A channel slice of a batch is not contiguous, so code that
concatenates along the channels and then slices pays them. The CPU's convolutions make the same copies,
but one: they copy the backward's input whether or not the weight's gradient is asked for
(``tests/analysis/test_ops.py`` checks the rule against the CPU profiler). The bias addition and the
bias' gradient are cuDNN's: where the CPU fuses them, they are counted anyway.
"""
from collections import Counter
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

#: ops that allocate or relabel memory and launch no kernel
NO_KERNEL = frozenset({'aten.empty', 'aten.empty_like', 'aten.empty_strided', 'aten.new_empty',
                       'aten.new_empty_strided', 'aten._unsafe_view'})


class Counts(NamedTuple):
    """What :func:`count` counted: per op name, how many dispatches and how many bytes they moved; the
    bytes saved for the backward; per kind, the kernels the convolutions launch inside themselves on CUDA
    and the bytes those move (:func:`hidden_kernels`); per op name, the multiply-adds
    (:func:`multiply_adds`)."""
    ops: Counter
    bytes: Counter
    saved: int = 0
    hidden: Counter = Counter()
    hidden_bytes: Counter = Counter()
    macs: Counter = Counter()
    #: ``(bytes, multiply-adds)`` of every kernel, in the order they would launch (the dispatched ops that
    #: may launch one, each followed by the kernels it runs inside itself)
    launches: Tuple[Tuple[int, int], ...] = ()


def _bytes(*trees) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(trees) if isinstance(t, Tensor))


def channels_last_like(t: Tensor) -> bool:
    """Whether PyTorch suggests channels-last for ``t`` (``Tensor::suggest_memory_format``, restated from
    c10's ``is_channels_last_strides_2d``): a 4-D tensor whose strides grow in the order C, W, H, N, where
    size-1 dimensions count by their strides too, and ambiguous cases go to the default format."""
    if t.dim() != 4 or t.stride(1) == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if t.size(d) == 0 or t.stride(d) < smallest or (d == 0 and smallest == t.stride(1)):
            return False
        smallest = t.stride(d) * max(t.size(d), 1)
    return True


def _backend_format(*tensors: Tensor) -> torch.memory_format:
    """The memory format cuDNN runs a convolution in: channels-last where the input or the weight is."""
    return torch.channels_last if any(channels_last_like(t) for t in tensors) else torch.contiguous_format


def _copy(t: Tensor, memory_format: torch.memory_format) -> List[Tuple[str, int]]:
    return [] if t.is_contiguous(memory_format=memory_format) else [('copy', 2 * _bytes(t))]


def hidden_kernels(name: str, args: Sequence, out) -> List[Tuple[str, int]]:
    """``[(kind, bytes moved)]`` of the kernels the op ``name`` (``'aten.convolution'``, ...) called with
    ``args`` runs inside itself on CUDA (see the module docstring): ``'copy'`` (reads and writes a tensor),
    ``'bias'`` (the bias added to the output: reads it and the bias, writes it; not for depthwise convs,
    whose kernel adds it), ``'bias_grad'`` (reads the output gradient); none for other ops."""
    if name == 'aten.convolution':
        x, weight, bias, groups = args[0], args[1], args[2], args[8]
        memory_format = _backend_format(x, weight)
        hidden = _copy(x, memory_format) + _copy(weight, memory_format)
        if bias is not None and not (groups > 1 and groups == x.shape[1] == weight.shape[0]):
            hidden.append(('bias', 2 * _bytes(out) + _bytes(bias)))
        return hidden
    if name == 'aten.convolution_backward':
        grad, x, weight, mask = args[0], args[1], args[2], args[10]
        memory_format = _backend_format(x, weight)
        hidden = _copy(grad, memory_format) + _copy(weight, memory_format)
        hidden += _copy(x, memory_format) if mask[1] else []
        return hidden + ([('bias_grad', _bytes(grad) + _bytes(out[2]))] if mask[2] else [])
    return []


def _conv_macs(out: Tensor, weight: Tensor) -> int:
    return out.numel() * weight[0].numel()  # per output value: C_in / groups × the kernel's size


def multiply_adds(name: str, args: Sequence, out) -> int:
    """The multiply-adds of a convolution (forward: one per output value and kernel weight; backward: as
    many per gradient asked for, of the input and of the weight) or a matrix product; 0 for other ops."""
    if name == 'aten.convolution':
        return _conv_macs(out, args[1])
    if name == 'aten.convolution_backward':
        return sum(args[10][:2]) * _conv_macs(args[0], args[2])
    if name in ('aten.mm', 'aten.addmm', 'aten.bmm'):
        a = args[-2]
        return out.numel() * a.shape[-1]
    return 0


class _OpCounter(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.ops, self.bytes, self.hidden, self.hidden_bytes = Counter(), Counter(), Counter(), Counter()
        self.macs = Counter()
        self.launches: List[Tuple[int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            name = str(func.overloadpacket)
            self.ops[name] += 1
            macs = multiply_adds(name, args, out)
            if name not in NO_KERNEL:
                moved = _bytes(args, kwargs, out)
                self.bytes[name] += moved
                self.launches.append((moved, macs))
            self.macs[name] += macs
            for kind, moved in hidden_kernels(name, args, out):
                self.hidden[kind] += 1
                self.hidden_bytes[kind] += moved
                self.launches.append((moved, 0))
        return out


def count(fn: Callable[[], object], exclude: Iterable[Tensor] = ()) -> Counts:
    """The aten ops ``fn()`` dispatches (views left out) and the bytes they read and write, per op name,
    the bytes of the storages autograd saves for the backward meanwhile, but those of ``exclude``, and the
    kernels the convolutions among the ops would launch inside themselves on CUDA (:func:`hidden_kernels`).
    (Storages are told apart by their Python object, which PyTorch keeps one per storage: this works on
    ``meta`` too, where every address is 0; they are held until the end.)"""
    storages, skip = {}, {id(t.untyped_storage()) for t in exclude}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[id(storage)] = storage
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _OpCounter() as counter:
        fn()
    saved = sum(storage.nbytes() for key, storage in storages.items() if key not in skip)
    macs = Counter({name: n for name, n in counter.macs.items() if n})
    return Counts(counter.ops, counter.bytes, saved, counter.hidden, counter.hidden_bytes, macs,
                  tuple(counter.launches))


def count_ops(fn: Callable[[], object]) -> Counter:
    """``{op name: count}`` of the aten ops ``fn()`` dispatches (views left out)."""
    return count(fn).ops


def kernel_ops(ops: Counter) -> int:
    """The ops of ``ops`` that may launch a kernel (those not in :data:`NO_KERNEL`)."""
    return sum(n for name, n in ops.items() if name not in NO_KERNEL)


def train_step_counts(module: nn.Module, x: Tensor, forward: Optional[Callable[[Tensor], Tensor]] = None) -> Counts:
    """The ops, bytes moved and bytes saved for the backward (:func:`count`; the last without the module's
    parameters and buffers and ``x``) of one training forward + backward of ``module`` (or of
    ``forward(x)``) on ``x``, with a sum as the loss. Gradients are cleared first (accumulating into an
    existing ``.grad`` adds ops) and again after; ``x`` keeps its ``requires_grad`` (a block inside a
    network also sends a gradient to its input: one addition per extra reader of ``x``)."""
    forward = forward or module

    def step():
        forward(x).sum().backward()

    for p in module.parameters():
        p.grad = None
    if x.grad is not None:
        x.grad = None
    counts = count(step, [x, *module.parameters(), *module.buffers()])
    for p in module.parameters():
        p.grad = None
    x.grad = None
    return counts


__all__ = ['NO_KERNEL', 'Counts', 'channels_last_like', 'count', 'count_ops', 'hidden_kernels', 'kernel_ops',
           'multiply_adds', 'train_step_counts']
