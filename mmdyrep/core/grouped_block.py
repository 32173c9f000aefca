"""A training-mode forward of a DyRep block with its BNs grouped: few kernels per block.

When the BNs of a block's branches normalise with batch statistics (mmpretrain; mmseg with
``norm_eval=False``), no branch folds into the origin's kernel (:mod:`.fast_block`), and the
per-branch forward launches every conv, BN, pad and addition on its own: about ten aten ops per
branch, forward and backward. On a GPU such a block is bound by launches and memory traffic, not by
its multiply-adds. :func:`grouped_forward` computes the same function with far fewer ops:

* a BN is per channel, so BNs that run at the same point of the graph run as ONE ``batch_norm`` over
  their inputs concatenated along the channels: the middle BNs of the 1×1–K×K and 1×1–AVG branches
  on one side, the last BN of every branch on the other. Their running statistics are updated in
  place through views: each BN's buffers are consecutive slices of one block-wide storage
  (:func:`pack_buffers`, redone whenever ``.to()`` or a structure change breaks it);
* the stride-1 1×1 convs that read the block's input (of the 1×1–K×K and 1×1–AVG branches, and the
  1×1 branch where it reads at stride 1 too) run as one conv with their kernels concatenated, and
  their BNs as one; the 1×1 branch's output then joins the origin's (its constant ``c``, below, as
  the origin's bias);
* the branches' outputs are summed by one reduction over the concatenated BN output, in its memory
  format (a channels-last block stays channels-last, forward and backward: no layout copies);
* the padding with the middle BN's zero response ``c`` (as DBB pads, see :mod:`.branches`) is
  ``pad_0(y - c) + c``: the K×K conv and the K×K average then pad with zeros, and the constant
  ``c`` enters as their bias (``Σ W c``, ``c``), computed without a gradient, as the reference
  detaches ``c`` (the bias' share of ``W``'s gradient is the sum of the output gradient, which the
  training-mode BN after it makes zero: so the gradients agree up to rounding).

Same outputs, gradients and running statistics as the per-branch forward up to float rounding
(tests in float64), in either memory format, and under ``torch.compile``: traced as one graph, the
running statistics then updated in concatenated copies written back to each BN (the packing's storage
checks cannot be traced; the compiler fuses the copies). Applies to a block whose branches hold plain
``nn.BatchNorm2d`` in training mode with one ``eps`` and one ``momentum`` (not ``None``),
``groups == 1`` and no nested block; anything else runs the per-branch forward. Pure PyTorch; imports
only :mod:`.branches` and :mod:`.transforms`.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .branches import Conv1x1AvgBranch, Conv1x1Branch, Conv1x1KxKBranch, Conv1xKBranch, ConvKx1Branch, ResidualBranch
from .transforms import is_channels_last

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


#: The branch types :func:`grouped_forward` handles, in the order their last BNs are concatenated. The
#: 1×1 branch comes first: where it joins the 1×1 convs of the middle stage (stride 1), its BN is then
#: next to the middle BNs in the packed statistics, and runs with them.
_LAST_ORDER = ('1x1', '1x1_kxk', '1x1_avg', '1xk', 'kx1', 'residual')
_KNOWN = (Conv1x1KxKBranch, Conv1x1AvgBranch, Conv1x1Branch, Conv1xKBranch, ConvKx1Branch, ResidualBranch)


def group_norms(block: nn.Module) -> Optional[List[nn.BatchNorm2d]]:
    """The BNs of ``block`` in the order :func:`grouped_forward` concatenates them (the middle BNs of
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


def worth_grouping(block: nn.Module) -> bool:
    """Whether :func:`grouped_forward` computes ``block`` (:func:`can_group`) with fewer ops than the
    per-branch forward: with three BNs or more (a 1×1 and a residual branch alone, RepVGG's set, issue
    about as many ops either way: ``tests/core/test_grouped_block.py``)."""
    norms = group_norms(block)
    return norms is not None and all(n.training for n in norms) and len(norms) >= 3


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


def _sum_groups(z: Tensor, count: int) -> Tensor:
    """``[N, count·C, H, W] → [N, C, H, W]``: the sum of ``z``'s ``count`` consecutive channel groups, in
    ``z``'s memory format forward and backward. (A channels-last ``z`` summed through an NCHW view
    would give an NCHW sum, and an NCHW gradient to the BN before it: a layout copy each way.)"""
    if count == 1:
        return z
    n, _, h, w = z.shape
    if is_channels_last(z):
        return z.permute(0, 2, 3, 1).view(n, h, w, count, -1).sum(3).permute(0, 3, 1, 2)
    return z.view(n, count, -1, h, w).sum(1)


def _joins_middle(branch: Optional[nn.Module]) -> bool:
    """Whether a 1×1 branch reads the input as the middle stage's 1×1 convs do (stride 1, no padding),
    so that its conv and its BN run with theirs."""
    return branch is not None and branch.conv.stride == (1, 1) and branch.conv.padding == (0, 0)


def grouped_forward(block: nn.Module, x: Tensor) -> Tensor:
    """``block(x)`` for a block that :func:`can_group`: see the module docstring."""
    s = block.spec
    br: Dict[str, nn.Module] = dict(block.branches.items())  # (torch.compile mistraces dict(ModuleDict))
    kxk, avg = br.get('1x1_kxk'), br.get('1x1_avg')
    middle = [b.norm1 for b in (kxk, avg) if b is not None]
    last_names = [n for n in _LAST_ORDER if n in br]
    norms = middle + [br[n].norm for n in last_names]  # as group_norms orders them
    traced = torch.compiler.is_compiling()
    running_mean, running_var, tracked = statistics = _running_statistics(norms, traced)
    eps, momentum = norms[0].eps, norms[0].momentum
    # the first stage: the middle 1x1 convs, and the 1x1 branch where it reads x as they do (its BN is
    # packed right after theirs); the second stage: the other branches' last BNs
    joined = ['1x1'] if middle and _joins_middle(br.get('1x1')) else []
    first_norms, last_names = norms[:len(middle) + len(joined)], last_names[len(joined):]
    last = norms[len(first_norms):]
    f = sum(n.num_features for n in first_norms)
    tracked.add_(1)

    # every parameter read in concatenated form, as slices of ONE concatenation (one op forward, and
    # one backward: the concatenation of the slices' gradients)
    first = [b.conv1.weight if b is kxk else b.conv.weight for b in (kxk, avg) if b is not None]
    first += [br[n].conv.weight for n in joined]
    groups = [first, [n.weight for n in first_norms], [n.bias for n in first_norms], [n.weight for n in last],
              [n.bias for n in last]]
    u_weight, gamma_first, beta_first, gamma_last, beta_last = _joined(groups)

    bias = block.origin.bias
    last_inputs: Dict[str, Tensor] = {}
    joined_parts = []
    if middle:
        # the stride-1 1x1 convs of the first stage as one conv, then their BNs as one
        u = F.conv2d(x, u_weight.view(f, s.in_channels, 1, 1))
        y = F.batch_norm(u, running_mean[:f], running_var[:f], gamma_first, beta_first, True, momentum, eps)
        with torch.no_grad():  # the BNs' zero response c, from running statistics as the reference
            zeros_in = _constant(block, '_grouped_zeros', (1, f, 1, 1), 0.0, y)
            zero = F.batch_norm(zeros_in, running_mean[:f], running_var[:f], gamma_first, beta_first, False, 0.0, eps)
        names = [n for n in ('1x1_kxk', '1x1_avg') if n in br] + joined
        sizes = [n.num_features for n in first_norms]
        parts = dict(zip(names, torch.split(y - zero, sizes, 1)))  # pad_c(y) = pad_0(y-c) + c
        zeros = dict(zip(names, torch.split(zero.reshape(-1), sizes)))
        if joined:  # y = (y - c) + c: the constant c joins the origin's bias
            bias = zeros['1x1'] if bias is None else bias + zeros['1x1']
            joined_parts.append(parts['1x1'])
        if kxk is not None:
            w = kxk.kxk.weight
            with torch.no_grad():  # the constant's share: sum over the kernel of W c
                size = s.dilation * (s.kernel_size - 1) + 1
                c = zeros['1x1_kxk'].reshape(1, -1, 1, 1)
                kxk_bias = F.conv2d(c.expand(1, c.shape[1], size, size), w, None, 1, 0, s.dilation).reshape(-1)
            last_inputs['1x1_kxk'] = F.conv2d(parts['1x1_kxk'], w, kxk_bias, s.stride, s.padding, s.dilation)
        if avg is not None:
            k = s.kernel_size
            average = _constant(avg, '_avg_weight', (s.out_channels, 1, k, k), 1.0 / k**2, y)  # depthwise
            last_inputs['1x1_avg'] = F.conv2d(parts['1x1_avg'], average, zeros['1x1_avg'], s.stride, s.padding,
                                              s.dilation, s.out_channels)
    out = F.conv2d(x, block.origin.weight, bias, s.stride, s.padding, s.dilation)
    for part in joined_parts:
        out = out + part
    for name in ('1x1', '1xk', 'kx1'):
        if name in last_names:
            conv = br[name].conv
            last_inputs[name] = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation)
    if 'residual' in br:
        last_inputs['residual'] = x
    z = _cat([last_inputs[n] for n in last_names], 1)
    z = F.batch_norm(z, running_mean[f:], running_var[f:], gamma_last, beta_last, True, momentum, eps)
    if traced:
        _write_back(norms, statistics)
    return out + _sum_groups(z, len(last_names))


__all__ = ['can_group', 'group_norms', 'grouped_forward', 'pack_block', 'pack_buffers', 'worth_grouping']
