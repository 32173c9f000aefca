"""A training-mode forward of a DyRep block with fewer kernels and fewer bytes than its branches' own.

When the BNs of a block's branches normalise with batch statistics (mmpretrain; mmseg with
``norm_eval=False``), no branch folds into the origin's kernel (:mod:`.fast_block`), and the
per-branch forward launches every conv, BN, pad and addition on its own: about ten aten ops per
branch, forward and backward. On a GPU such a block is bound by memory traffic and launches more than
by its multiply-adds. :func:`grouped_forward` computes the same function with fewer of both:

* the stride-1 1×1 convs that read the block's input (of the 1×1–K×K and 1×1–AVG branches, and the
  1×1 branch where it reads at stride 1 too) run as one conv with their kernels concatenated, and
  their BNs, which are per channel, as ONE ``batch_norm`` over its output; the 1×1 branch's BN output
  is then added to the origin's. The running statistics are updated in place through views: each BN's
  buffers are consecutive slices of one block-wide storage (:func:`pack_buffers`, redone whenever
  ``.to()`` or a structure change breaks it);
* the last BN of each branch runs on its own, and its output is added to the block's. Grouping them too
  (one BN over their inputs concatenated) saves launches but copies every input forward and the output
  gradient once per branch backward, and its slices would be copied again before a conv reads them: more
  bytes than the launches it saves cost on a GPU, by the model that fits the H200's measurements
  (:mod:`mmdyrep.analysis.roofline`, docs/benchmarks.md);
* the padding with the middle BN's zero response ``c`` (as DBB pads, see :mod:`.branches`) is
  ``pad_0(y - c) + c``: the K×K conv and the K×K average then pad with zeros, and the constant
  ``c`` enters as their bias (``Σ W c``, ``c``), computed without a gradient, as the reference
  detaches ``c`` (the bias' share of ``W``'s gradient is the sum of the output gradient, which the
  training-mode BN after it makes zero: so the gradients agree up to rounding). ``y - c`` is one
  subtraction per branch, so that each conv reads a contiguous tensor;
* no conv runs with a bias over its output (cuDNN takes none: PyTorch adds it in a second kernel,
  :func:`~mmdyrep.analysis.ops.hidden_kernels`): the origin's bias joins the bias of a last BN (their
  outputs are summed), and the K×K's ``Σ W c``, a constant per channel before a training-mode BN, joins
  only that BN's running mean (:func:`_add_kxk_bias`);
* the backward is written out (:class:`_GroupedForward`): one ``convolution_backward`` per conv and
  one ``native_batch_norm_backward`` per BN (the middle ones as one), the parameters' gradients returned
  as views of the grouped ones, only the gradients asked for. Autograd's generic backward of the same
  forward adds the backward of every concatenation, slice and cast;
* the first stage's conv output and the K×K's input (its shifted BN output) are not kept for the
  backward but recomputed there from the block's input (one 1×1 conv, one BN over the K×K's channels:
  3 more ops). The activation memory of a train step is what a GPU's peak memory follows
  (docs/benchmarks.md).

What it does not save is the host's time: its forward and backward are Python around the ops, where the
per-branch backward runs in autograd's C++ engine, and each of its ops costs the host 1.5-1.8x as much.
Measured on CPU with tiny inputs (``tools/analysis/block_kernels.py --host``): 0.93-1.0x the per-branch
step for DyRep's and DBB's sets on one machine, 1.11-1.16x on another (docs/benchmarks.md). A block with
nothing to group (RepVGG's set: no first stage) runs :func:`_forward` under autograd's own backward
instead (the same kernels and bytes; 1.15-1.21x the per-branch step on the host on the first machine,
against 1.43x with the Function; 1.34-1.37x on the second). The blocks with a first stage keep the
Function: under autograd's own backward they would keep twice the activations.

Same outputs, gradients and running statistics as the per-branch forward up to float rounding
(tests in float64), in either memory format, under autocast (the convs cast to its dtype explicitly,
as autocast would), and under ``torch.compile``: traced as one graph with autograd's backward, the
running statistics then updated in concatenated copies written back to each BN (the packing's storage
checks cannot be traced; the compiler fuses the copies). Applies to a block whose branches hold plain
``nn.BatchNorm2d`` in training mode with one ``eps`` and one ``momentum`` (not ``None``),
``groups == 1`` and no nested block; anything else runs the per-branch forward. Pure PyTorch; imports
only :mod:`.branches`.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .branches import (Conv1x1AvgBranch, Conv1x1Branch, Conv1x1KxKBranch, Conv1xKBranch, ConvKx1Branch, ConvSpec,
                       ResidualBranch)

_BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')


def _packed(tensors: Sequence[Tensor]) -> bool:
    """Whether ``tensors`` are consecutive, contiguous pieces of one storage, in order."""
    first = tensors[0]
    ptr, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    for t in tensors:
        if (t.untyped_storage().data_ptr() != ptr or t.storage_offset() != offset or not t.is_contiguous()
                or t.dtype != first.dtype):
            return False
        offset += t.numel()
    return True


def _span(tensors: Sequence[Tensor]) -> Tensor:
    """The 1-D view over packed ``tensors`` (see :func:`_packed`)."""
    first = tensors[0]
    return first.as_strided((sum(t.numel() for t in tensors), ), (1, ), first.storage_offset())


def pack_buffers(norms: Sequence[nn.BatchNorm2d]) -> Tuple[Tensor, Tensor, Tensor]:
    """Make the running statistics of ``norms`` consecutive slices of one storage per buffer (values
    kept) and return the three spans ``(running_mean [ΣC], running_var [ΣC], num_batches_tracked
    [len(norms)])``. In-place updates of a span update every BN's own buffers; ``state_dict``,
    ``load_state_dict`` and DDP's in-place buffer broadcasts see each BN's buffers as before."""
    spans = []
    for key in _BUFFERS:
        tensors = [getattr(n, key) for n in norms]
        if not _packed(tensors):
            whole = torch.cat([t.reshape(-1) for t in tensors])
            start = 0
            for norm, t in zip(norms, tensors):
                piece = whole[start:start + t.numel()]
                setattr(norm, key, piece.view(t.shape))
                start += t.numel()
            tensors = [getattr(n, key) for n in norms]
        spans.append(_span(tensors))
    return tuple(spans)


#: The branch types :func:`grouped_forward` handles, in the order their last BNs run and their statistics
#: are packed. The 1×1 branch comes first: where it joins the 1×1 convs of the middle stage (stride 1),
#: its BN is then next to the middle BNs in the packed statistics, and runs with them.
_LAST_ORDER = ('1x1', '1x1_kxk', '1x1_avg', '1xk', 'kx1', 'residual')
_KNOWN = (Conv1x1KxKBranch, Conv1x1AvgBranch, Conv1x1Branch, Conv1xKBranch, ConvKx1Branch, ResidualBranch)


def group_norms(block: nn.Module) -> Optional[List[nn.BatchNorm2d]]:
    """The BNs of ``block`` in the order :func:`grouped_forward` packs their statistics (the middle BNs of
    the 1×1–K×K and 1×1–AVG branches, then every branch's last BN in :data:`_LAST_ORDER`), or ``None``
    when the block's structure does not allow grouping: a branch of another type or cropped, a nested
    block, ``groups > 1``, a norm that is not a plain ``nn.BatchNorm2d`` with running statistics, or
    norms with different ``eps`` / ``momentum``. The BNs' modes are not looked at."""
    s = block.spec
    if s.groups != 1 or not block.branches or not isinstance(block.origin, nn.Conv2d):
        return None
    for name, branch in block.branches.items():
        if name not in _LAST_ORDER or type(branch) not in _KNOWN:
            return None
        if getattr(branch, 'crop', 0) or getattr(branch, 'shift', 0):
            return None
        if isinstance(branch, Conv1x1KxKBranch) and type(branch.kxk) is not nn.Conv2d:
            return None
    br = block.branches
    norms = [br[n].norm1 for n in ('1x1_kxk', '1x1_avg') if n in br] + [br[n].norm for n in _LAST_ORDER if n in br]
    if not all(type(n) is nn.BatchNorm2d and n.affine and n.track_running_stats and n.running_mean is not None
               and n.momentum is not None for n in norms):
        return None
    if len({(n.eps, n.momentum, n.running_mean.dtype) for n in norms}) != 1:
        return None
    return norms


def can_group(block: nn.Module) -> bool:
    """Whether :func:`grouped_forward` computes ``block``'s forward now: its structure allows it
    (:func:`group_norms`) and every one of its BNs is in training mode."""
    norms = group_norms(block)
    return norms is not None and all(n.training for n in norms)


def pack_block(block: nn.Module) -> bool:
    """Pack the running statistics of ``block``'s BNs (:func:`pack_buffers`) where its structure allows
    grouping; returns whether it did. :func:`grouped_forward` packs when it finds them unpacked; doing it
    when a block is built or changed (``grow``, ``cut_``) keeps that from happening later, after a DDP
    wrapper has listed the module's buffers."""
    norms = group_norms(block)
    if norms is None:
        return False
    pack_buffers(norms)
    return True


def _constant(module: nn.Module, name: str, shape: Tuple[int, ...], value: float, like: Tensor) -> Tensor:
    """A ``shape`` tensor filled with ``value`` in ``like``'s dtype and device, kept on ``module`` as the
    plain attribute ``name`` between calls (not a buffer: no ``state_dict`` entry; remade when the
    shape, dtype or device changes). Under ``torch.compile`` made in the graph instead (the compiler
    folds it; a module attribute set while tracing would only force a recompile)."""
    if torch.compiler.is_compiling():
        return torch.full(shape, value, dtype=like.dtype, device=like.device)
    cached = getattr(module, name, None)
    if cached is None or cached.shape != shape or cached.dtype != like.dtype or cached.device != like.device:
        cached = torch.full(shape, value, dtype=like.dtype, device=like.device)
        setattr(module, name, cached)
    return cached


def _cat(tensors: List[Tensor], dim: int = 0) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim)


def _joined(groups: List[List[Tensor]]) -> List[Optional[Tensor]]:
    """Per group of tensors, their flattened concatenation, as a slice of ONE concatenation of all
    (``None`` for an empty group)."""
    full = [g for g in groups if g]
    if not full:
        return [None] * len(groups)
    flat = torch.cat([p.reshape(-1) for g in full for p in g])
    pieces = iter(torch.split(flat, [sum(p.numel() for p in g) for g in full]))
    return [next(pieces) if g else None for g in groups]


def _running_statistics(norms: Sequence[nn.BatchNorm2d], traced: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """``(running_mean, running_var, num_batches_tracked)`` of ``norms`` concatenated, as 1-D tensors the
    grouped BNs update in place: in eager mode the packed spans of the BNs' own buffers
    (:func:`pack_buffers`); while ``torch.compile`` traces (it cannot trace the packing's storage
    checks) concatenated copies, which :func:`_write_back` copies into each BN (the compiler fuses both)."""
    if not traced:
        return pack_buffers(norms)
    return tuple(torch.cat([getattr(n, key).reshape(-1) for n in norms]) for key in _BUFFERS)


def _write_back(norms: Sequence[nn.BatchNorm2d], statistics: Sequence[Tensor]) -> None:
    """Copy the concatenated statistics of :func:`_running_statistics` (``traced``) into each BN's buffers."""
    for key, whole in zip(_BUFFERS, statistics):
        buffers = [getattr(n, key) for n in norms]
        for buffer, piece in zip(buffers, torch.split(whole, [b.numel() for b in buffers])):
            buffer.copy_(piece.view_as(buffer))


def _joins_middle(branch: Optional[nn.Module]) -> bool:
    """Whether a 1×1 branch reads the input as the middle stage's 1×1 convs do (stride 1, no padding),
    so that its conv and its BN run with theirs."""
    return branch is not None and branch.conv.stride == (1, 1) and branch.conv.padding == (0, 0)


class _Plan(NamedTuple):
    """What :func:`_forward` computes for one block, as plain data (no tensors)."""
    spec: ConvSpec
    first: Tuple[str, ...]  # the first stage, in order: '1x1_kxk', '1x1_avg', then '1x1' where it joins
    first_sizes: Tuple[int, ...]  # their channels
    padded: int  # how many of them pad their BN's output with its zero response (1x1-KxK, 1x1-AVG)
    last: Tuple[str, ...]  # the branches whose last BN runs on its own (all but the joined 1x1), in _LAST_ORDER
    readers: Tuple[Tuple[str, Tuple[int, int], Tuple[int, int], Tuple[int, int]], ...]  # their convs on x
    bias: bool  # whether the origin has a bias
    eps: float
    momentum: float

    @property
    def padded_sizes(self) -> Tuple[int, ...]:
        """The channels of the first-stage branches that pad (1×1–K×K, 1×1–AVG): the first ones."""
        return self.first_sizes[:self.padded]


class _Roles:
    """The tensors of :func:`_plan`, or anything listed in that order (which of them need a gradient, their
    dtypes, their gradients), by role: :func:`_unpack` reads a flat list into one, :meth:`flat` writes it back."""

    def __init__(self, first: List[list], last_gammas: list, last_betas: list, kxk, origin, bias, readers: list):
        # first: the first stage's 1x1 weights, its BNs' weights, its BNs' biases (each run as one tensor)
        self.first, self.last_gammas, self.last_betas = first, last_gammas, last_betas
        self.kxk, self.origin, self.bias, self.readers = kxk, origin, bias, readers

    def flat(self, plan: _Plan) -> list:
        out = [item for group in self.first for item in group] + self.last_gammas + self.last_betas
        out += [self.kxk] if '1x1_kxk' in plan.first else []
        return out + [self.origin] + ([self.bias] if plan.bias else []) + self.readers


def _plan(block: nn.Module) -> Tuple[_Plan, List[Tensor], List[nn.BatchNorm2d]]:
    """The plan of ``block``, its tensors in the order :func:`_unpack` reads them, and its BNs in the
    order :func:`group_norms` gives them."""
    br: Dict[str, nn.Module] = dict(block.branches.items())  # (torch.compile mistraces dict(ModuleDict))
    joined = ('1x1', ) if ('1x1_kxk' in br or '1x1_avg' in br) and _joins_middle(br.get('1x1')) else ()
    first = tuple(n for n in ('1x1_kxk', '1x1_avg') if n in br) + joined
    last = tuple(n for n in _LAST_ORDER if n in br and n not in joined)
    first_norms = [br[n].norm1 if n != '1x1' else br[n].norm for n in first]
    last_norms = [br[n].norm for n in last]
    readers = tuple((n, br[n].conv.stride, br[n].conv.padding, br[n].conv.dilation) for n in ('1x1', '1xk', 'kx1')
                    if n in last)
    origin = block.origin
    plan = _Plan(block.spec, first, tuple(n.num_features for n in first_norms), len(first) - len(joined), last,
                 readers, origin.bias is not None,
                 first_norms[0].eps if first_norms else last_norms[0].eps,
                 first_norms[0].momentum if first_norms else last_norms[0].momentum)
    first_tensors = [[br[n].conv1.weight if n == '1x1_kxk' else br[n].conv.weight for n in first],
                     [n.weight for n in first_norms], [n.bias for n in first_norms]]
    tensors = _Roles(first_tensors, [n.weight for n in last_norms], [n.bias for n in last_norms],
                     br['1x1_kxk'].kxk.weight if '1x1_kxk' in br else None, origin.weight, origin.bias,
                     [br[r[0]].conv.weight for r in readers])
    return plan, tensors.flat(plan), first_norms + last_norms


def _unpack(plan: _Plan, items: Sequence) -> _Roles:
    it = iter(items)
    n1, n2 = len(plan.first), len(plan.last)
    first = [[next(it) for _ in range(n1)] for _ in range(3)]
    last_gammas, last_betas = [next(it) for _ in range(n2)], [next(it) for _ in range(n2)]
    kxk = next(it) if '1x1_kxk' in plan.first else None
    origin = next(it)
    bias = next(it) if plan.bias else None
    return _Roles(first, last_gammas, last_betas, kxk, origin, bias, list(it))


def _to(t: Optional[Tensor], dtype: Optional[torch.dtype]) -> Optional[Tensor]:
    return t if t is None or dtype is None or t.dtype == dtype else t.to(dtype)


def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype autocast would run a conv on ``x`` in, or ``None`` where autocast is off."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def _forward(block: nn.Module, plan: _Plan, x: Tensor, tensors: Sequence[Tensor],
             statistics: Sequence[Tensor]) -> Tuple[Tensor, dict]:
    """``block(x)`` (see the module docstring) and what :class:`_GroupedForward` keeps for the backward.
    Differentiable as it is (the compiled path); convs run in the autocast dtype, cast explicitly."""
    s, p = block.spec, plan
    low = _autocast_dtype(x)
    running_mean, running_var, tracked = statistics
    t = _unpack(p, tensors)
    if p.bias:  # the origin's bias joins the first last BN's (their outputs are summed): an addition of C
        # values instead of one over the output (on CUDA, a conv's bias is a second kernel) and a reduction
        t.last_betas[0] = t.last_betas[0] + t.bias
    u_weight, gamma_first, beta_first = _joined(t.first)
    br = block.branches
    f = sum(p.first_sizes)
    tracked.add_(1)
    xl = _to(x, low)
    keep = dict(x=xl, origin=_to(t.origin, low), readers=[_to(w, low) for w in t.readers])
    last_inputs: Dict[str, Tensor] = {}
    joined_part = None
    if f:
        # the stride-1 1x1 convs of the first stage as one conv, then their BNs as one
        keep['first'] = _to(u_weight, low).view(f, s.in_channels, 1, 1)
        u = F.conv2d(xl, keep['first'])
        y, mean, invstd = torch.native_batch_norm(u, gamma_first, beta_first, running_mean[:f], running_var[:f], True,
                                                  p.momentum, p.eps)
        # the 1x1-KxK and 1x1-AVG branches pad y with their BNs' zero response c: pad_c(y) = pad_0(y - c) + c
        padded, size = sum(p.padded_sizes), s.dilation * (s.kernel_size - 1) + 1
        with torch.no_grad():  # c, from running statistics as the reference; as a size x size image (below)
            zeros_in = _constant(block, '_grouped_zeros', (1, padded, size, size), 0.0, y)
            zero = torch.native_batch_norm(zeros_in, gamma_first[:padded], beta_first[:padded],
                                           running_mean[:padded], running_var[:padded], False, 0.0, p.eps)[0]
        keep.update(mean_first=mean, invstd_first=invstd, gamma_first=gamma_first, beta_first=beta_first, zero=zero)
        # one subtraction per branch: each conv then reads a contiguous tensor (a channel slice of a batch is
        # not: a convolution would copy it first, on CUDA and on CPU)
        zeros = dict(zip(p.first, zero.split_with_sizes(p.padded_sizes, 1)))  # batch 1: contiguous
        parts = {n: part - zeros[n][:, :, :1, :1] for n, part in zip(p.first, y.split_with_sizes(p.first_sizes, 1))
                 if n in zeros}
        if p.padded < len(p.first):  # the joined 1x1's BN output is added to the block's output as it is
            joined_part = y[:, padded:]
        if t.kxk is not None:
            w = keep['kxk'] = _to(t.kxk, low)
            with torch.no_grad():  # the constant's share, the sum over the kernel of W c (see _add_kxk_bias)
                kxk_bias = F.conv2d(zeros['1x1_kxk'], w, None, 1, 0, s.dilation).reshape(-1)
            last_inputs['1x1_kxk'] = F.conv2d(parts['1x1_kxk'], w, None, s.stride, s.padding, s.dilation)
        if '1x1_avg' in p.first:
            k = s.kernel_size
            keep['avg'] = _constant(br['1x1_avg'], '_avg_weight', (s.out_channels, 1, k, k), 1.0 / k**2, y)
            last_inputs['1x1_avg'] = F.conv2d(parts['1x1_avg'], keep['avg'], zeros['1x1_avg'][0, :, 0, 0], s.stride,
                                              s.padding, s.dilation, s.out_channels)
    out = F.conv2d(xl, keep['origin'], None, s.stride, s.padding, s.dilation)
    if joined_part is not None:
        out = out + joined_part
    for (name, stride, padding, dilation), w in zip(p.readers, keep['readers']):
        last_inputs[name] = F.conv2d(xl, w, None, stride, padding, dilation)
    if 'residual' in p.last:
        last_inputs['residual'] = x
    keep['last'] = []  # (input, batch mean, inverse std, weight) of each last BN
    for i, (name, gamma, beta) in enumerate(zip(p.last, t.last_gammas, t.last_betas)):
        at = slice(f + i * s.out_channels, f + (i + 1) * s.out_channels)
        zb, mean, invstd = torch.native_batch_norm(last_inputs[name], gamma, beta, running_mean[at], running_var[at],
                                                   True, p.momentum, p.eps)
        keep['last'] += [last_inputs[name], mean, invstd, gamma]
        out = out + zb
    if t.kxk is not None:
        keep['kxk_bias'] = kxk_bias
    return out, keep


def _add_kxk_bias(block: nn.Module, keep: dict, momentum: float) -> None:
    """A constant per channel before a training-mode BN changes only the BN's running mean: :func:`_forward`
    runs the 1×1–K×K branch's K×K conv without its bias (on CUDA a second kernel over the whole output),
    and the bias joins the last BN's running mean here, after the BN ran (as the BN would have added it)."""
    if 'kxk_bias' in keep:
        block.branches['1x1_kxk'].norm.running_mean.add_(keep['kxk_bias'], alpha=momentum)


def _pair(v) -> List[int]:
    return list(v) if isinstance(v, tuple) else [v, v]


def _conv_backward(grad: Tensor, x: Tensor, weight: Tensor, mask: Sequence[bool], stride=1, padding=0, dilation=1,
                   bias: Optional[int] = None, groups: int = 1) -> Tuple[Optional[Tensor], ...]:
    """``(grad of x, of weight, of bias)`` of ``conv2d(x, weight, bias, ...)`` for the output gradient ``grad``:
    one op, each result only where ``mask`` asks for it."""
    return torch.ops.aten.convolution_backward.default(_to(grad, x.dtype), x, weight, None if bias is None else [bias],
                                                       _pair(stride), _pair(padding), _pair(dilation), False, [0, 0],
                                                       groups, list(mask))


def _norm_backward(grad: Tensor, x: Tensor, weight: Tensor, mean: Tensor, invstd: Tensor, eps: float,
                   mask: Sequence[bool]) -> Tuple[Optional[Tensor], ...]:
    """``(grad of x, of weight, of bias)`` of a training-mode ``native_batch_norm`` that saved ``mean`` and
    ``invstd``: one op."""
    return torch.ops.aten.native_batch_norm_backward.default(_to(grad, x.dtype), x, weight, None, None, mean, invstd,
                                                             True, eps, list(mask))


class _GroupedForward(torch.autograd.Function):
    """:func:`_forward` with its backward written out: each conv's and each grouped BN's backward is one op,
    the gradients of the concatenated parameters are returned as views of the grouped ones, and nothing
    is cast or copied that autograd's generic backward of :func:`_forward` would (slices of gradients,
    concatenations of parameters, sums): fewer ops, same gradients. The first stage's activations are
    recomputed in the backward rather than kept (see the module docstring)."""

    @staticmethod
    def forward(ctx, block, plan, statistics, x, *tensors):
        out, keep = _forward(block, plan, x, tensors, statistics)
        _add_kxk_bias(block, keep, plan.momentum)
        ctx.plan, ctx.x_dtype = plan, x.dtype
        ctx.dtypes = [t.dtype for t in tensors]
        # not kept: the first stage's conv output u and its shifted BN output (recomputed in the backward)
        names = ('x', 'first', 'mean_first', 'invstd_first', 'gamma_first', 'beta_first', 'zero', 'kxk', 'avg',
                 'origin')
        ctx.names = names
        ctx.save_for_backward(*(keep.get(n) for n in names), *keep['readers'], *keep['last'])
        return out

    @staticmethod
    def backward(ctx, grad):
        p, s = ctx.plan, ctx.plan.spec
        saved = ctx.saved_tensors  # (each access unpacks them again)
        k, rest = dict(zip(ctx.names, saved)), saved[len(ctx.names):]
        readers, last = rest[:len(p.readers)], rest[len(p.readers):]
        need_x, need = ctx.needs_input_grad[3], _unpack(p, ctx.needs_input_grad[4:])
        g = _unpack(p, [None] * len(ctx.dtypes))  # the gradients, by role
        dtypes = _unpack(p, ctx.dtypes)  # the tensors' dtypes, which their gradients take
        gx0, g.origin, _ = _conv_backward(grad, k['x'], k['origin'], (need_x, need.origin, False), s.stride,
                                          s.padding, s.dilation)
        gx = [gx0]  # the gradients of x, summed at the end
        parts = {}
        for i, name in enumerate(p.last):  # every last BN's output is summed into the block's: its gradient is grad
            z, mean, invstd, gamma = last[4 * i:4 * i + 4]
            mask = (True, need.last_gammas[i], need.last_betas[i] or (i == 0 and bool(need.bias)))
            parts[name], g.last_gammas[i], g.last_betas[i] = _norm_backward(grad, z, gamma, mean, invstd, p.eps, mask)
        if need.bias:  # the origin's bias' gradient is the first last BN bias's: a copy (two parameters)
            g.bias = g.last_betas[0].clone()
        for i, ((name, stride, padding, dilation), w) in enumerate(zip(p.readers, readers)):
            gxi, g.readers[i], _ = _conv_backward(parts[name], k['x'], w, (need_x, need.readers[i], False), stride,
                                                  padding, dilation)
            gx.append(gxi)
        if 'residual' in parts:
            gx.append(parts['residual'])
        if p.first:
            # recomputed rather than kept from the forward (activation memory), from the same inputs: the
            # same values
            u = F.conv2d(k['x'], k['first'])
            us = dict(zip(p.first, u.split_with_sizes(p.first_sizes, 1)))
            gy = []  # the gradient of the middle BNs' output
            for name in p.first:
                if name == '1x1_kxk':  # the K×K's input, y - c as the forward's, for its weight's gradient
                    c = k['zero'][0, :s.in_channels, 0, 0]
                    shifted = k['beta_first'][:s.in_channels] - c
                    yc = torch.native_batch_norm(us[name], k['gamma_first'][:s.in_channels], shifted, None, None,
                                                 True, 0.0, p.eps)[0]
                    gi, g.kxk, _ = _conv_backward(parts[name], yc, k['kxk'], (True, need.kxk, False), s.stride,
                                                  s.padding, s.dilation)
                elif name == '1x1_avg':  # (the input's gradient does not read the input's values)
                    gi = _conv_backward(parts[name], us[name], k['avg'], (True, False, False), s.stride, s.padding,
                                        s.dilation, groups=s.out_channels)[0]
                else:  # the joined 1x1: its BN's output is added to the block's output
                    gi = grad
                gy.append(_to(gi, u.dtype))
            gu, gamma, beta = _norm_backward(_cat(gy, 1), u, k['gamma_first'], k['mean_first'], k['invstd_first'],
                                             p.eps, (True, any(need.first[1]), any(need.first[2])))
            gxf, weight, _ = _conv_backward(gu, k['x'], k['first'], (need_x, any(need.first[0]), False))
            gx.append(gxf)
            weight = _to(weight, dtypes.first[0][0])
            g.first = [_split(t, p.first_sizes, old) for t, old in zip((weight, gamma, beta), g.first)]
        g.kxk, g.origin, g.bias = (_to(g.kxk, dtypes.kxk), _to(g.origin, dtypes.origin), _to(g.bias, dtypes.bias))
        g.readers = [_to(t, d) for t, d in zip(g.readers, dtypes.readers)]
        grad_x = None
        if need_x:  # summed in x's dtype
            grad_x = _to(gx[0], ctx.x_dtype)
            for t in gx[1:]:
                grad_x = grad_x + _to(t, ctx.x_dtype)
        return (None, None, None, grad_x, *g.flat(p))


def _split(t: Optional[Tensor], sizes, default: list) -> list:
    """``t`` split into pieces of ``sizes``, or ``default`` where ``t`` is ``None``."""
    return default if t is None else list(t.split_with_sizes(sizes))


def grouped_forward(block: nn.Module, x: Tensor) -> Tensor:
    """``block(x)`` for a block that :func:`can_group`: see the module docstring."""
    plan, tensors, norms = _plan(block)
    if torch.compiler.is_compiling():
        statistics = _running_statistics(norms, True)
        out, keep = _forward(block, plan, x, tensors, statistics)
        _write_back(norms, statistics)
        _add_kxk_bias(block, keep, plan.momentum)
        return out
    statistics = _running_statistics(norms, False)
    if not plan.first:  # nothing grouped (RepVGG's set): autograd's own backward, run by its C++ engine,
        # launches the same kernels as _GroupedForward's and costs the host less than its Python
        return _forward(block, plan, x, tensors, statistics)[0]
    return _GroupedForward.apply(block, plan, statistics, x, *tensors)


__all__ = ['can_group', 'group_norms', 'grouped_forward', 'pack_block', 'pack_buffers']
