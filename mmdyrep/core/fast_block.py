"""A faster training-time forward of a DyRep block (opt-in): one K×K conv for all its linear parts.

A part of a block (its origin, or a branch) is *linear* when every BN inside it normalises
with its running statistics: eval mode with ``track_running_stats``. That is the BN setting of
mmdet's ResNet configs (``norm_eval=True``): the backbone's BNs, and so the new branches' BNs,
stay in eval mode while their γ and β train. A linear part is then exactly the conv
``conv(x, F) + b`` that its ``equivalent_kernel()`` gives (Sec. 3, Eq. 2 and 8), so the origin
and every linear branch add up to ONE K×K conv. :func:`merged_forward` builds that kernel from
the parameters at every call (a few parameter-sized ops; autograd sends every parameter the
same gradient as the per-branch forward) and runs one conv instead of up to eleven convs, ten
BNs and six additions.

A BN in training mode (mmpretrain; mmseg with ``norm_eval=False``) normalises with the
batch's statistics: ``BN_train(conv(x))`` is not a fixed linear function of ``x``, so such a
branch cannot be folded into the origin's kernel and runs on its own, as in the reference
forward. (Concatenating the branches' convs into one conv call instead would be exact, but a
1×1 / 1×K kernel padded to K×K costs K² / K times its multiply-adds: slower, so not done.)
One exception pays: a 1×1–AVG branch of a conv with few input channels (the 7×7 stride-2 stem:
3 in, 64 out) would run its 1×1 conv, its middle BN, the padding and a 7×7 average at the input
resolution on 64 channels. :func:`pool_first_forward` takes that BN's batch statistics from the
mean and covariance of the 3 input channels, averages the input first and runs the 1×1 conv at
the output resolution: the same function, computed in a different order. On CPU wherever it needs
fewer multiply-adds; on a GPU at the stem only (:data:`GPU_POOL_FIRST_RATIO`).

Two details keep the merged path identical to the per-branch forward, gradients included:

* the 1×1–K×K and 1×1–AVG branches pad their middle BN's output with the value a zero input
  maps to, detached (as DBB does); the merged bias uses that value detached too, and a
  zero-valued conv of an all-ones image gives back the gradient that the interior positions
  send to it in the per-branch forward;
* a 1×1–K×K branch is merged only when building its kernel (``C_out·C_mid·C_in·K²/g²``
  multiply-adds) costs less than running its 1×1 and K×K convs on this input, and nothing is
  merged below :data:`MIN_POSITIONS` output positions (tiny feature maps: the kernel-sized work
  then costs as much as the branches). The result is the same either way.

Pure PyTorch; imports only :mod:`.branches`, :mod:`.grouped_block` and :mod:`.transforms`, never
:mod:`.block` (which imports it).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import transforms as T
from .branches import (AsymmetricBranch, Conv1x1AvgBranch, Conv1x1Branch, Conv1x1KxKBranch, ConvSpec,
                       ResidualBranch, kernel_of)
from .grouped_block import _autocast_dtype, can_group, grouped_forward

#: kernel ``[out, in/g, K, K]``, bias ``[out]``, gradient fix ``[out, 1, K, K]`` (or None)
LinearForm = Tuple[Tensor, Tensor, Optional[Tensor]]


def _is_block(module: nn.Module) -> bool:
    return hasattr(module, 'origin') and hasattr(module, 'branches') and hasattr(module, 'spec')


def is_linear(module: nn.Module) -> bool:
    """Whether ``module`` (a conv, a branch or a block) is a fixed affine map of its input now:
    every BN in it uses running statistics, and it holds nothing but convs, BNs, branches, blocks."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            if m.training or not m.track_running_stats or m.running_mean is None:
                return False
        elif not (isinstance(m, (nn.Conv2d, nn.ModuleDict)) or hasattr(m, 'equivalent_kernel')):
            return False
    return True


def _add_fix(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    return b if a is None else a if b is None else a + b


def _pad_value(b1: Tensor, padding: int) -> Tuple[Tensor, Optional[Tensor]]:
    """The middle BN's zero response as the per-branch forward pads with it (detached when there is
    padding), and ``b1 - detached`` (exactly 0, carrying the gradient; ``None`` without padding)."""
    if not padding:
        return b1, None
    value = b1.detach()
    return value, b1 - value


def _identity_1x1(scale: Tensor, groups: int) -> Tensor:
    """``scale`` on the diagonal of a ``[out, out/g, 1, 1]`` kernel: a per-channel scaled identity."""
    out = scale.shape[0]
    eye = torch.eye(out // groups, dtype=scale.dtype, device=scale.device).repeat(groups, 1)
    return (eye * scale.reshape(-1, 1)).reshape(out, out // groups, 1, 1)


def _contribution(branch: nn.Module) -> Tuple[str, Tensor, Tensor, Optional[Tensor]]:
    """One branch as ``(shape, kernel, bias, fix)``: ``shape`` is ``'kxk'`` (a K×K kernel, or a
    ``[out, in/g, 1, 1]`` one that is the same at every tap) or ``'1x1'``, ``'1xk'``, ``'kx1'`` (a
    kernel to add at the centre of the K×K one)."""
    spec = branch.spec
    if isinstance(branch, (Conv1x1Branch, AsymmetricBranch)):
        kernel, bias = T.fuse_bn(branch.conv.weight, None, branch.norm)
        kh, kw = kernel.shape[-2:]
        return ('1x1' if kh == kw == 1 else '1xk' if kh == 1 else 'kx1'), kernel, bias, None
    if isinstance(branch, ResidualBranch):
        scale, shift = T.bn_scale_shift(branch.norm)
        return '1x1', _identity_1x1(scale, spec.groups), shift, None
    if isinstance(branch, Conv1x1AvgBranch):
        k1, b1 = T.fuse_bn(branch.conv.weight, None, branch.norm1)
        scale, shift = T.bn_scale_shift(branch.norm)
        b1, delta = _pad_value(b1, spec.padding)
        taps = spec.kernel_size**2
        fix = None
        if delta is not None:  # the average of the padded constant, per tap: scale / K² * b1
            fix = (scale.detach() * delta / taps).reshape(-1, 1, 1, 1).expand(-1, 1, spec.kernel_size,
                                                                              spec.kernel_size)
        return 'kxk', k1 * (scale / taps).reshape(-1, 1, 1, 1), shift + scale * b1, fix
    if isinstance(branch, Conv1x1KxKBranch):
        k1, b1 = T.fuse_bn(branch.conv1.weight, None, branch.norm1)
        inner, inner_bias, inner_fix = linear_form(branch.kxk)
        assert inner_fix is None, 'the K×K inside a 1x1_kxk branch has no padding of its own'
        k2, b2 = T.fuse_bn(inner, inner_bias, branch.norm)
        b1, delta = _pad_value(b1, spec.padding)
        kernel, bias = T.merge_1x1_kxk((k1, b1), (k2, b2), spec.groups)
        fix = None
        if delta is not None:  # per tap: sum over the middle channels of k2 * b1
            g, out, mid = spec.groups, k2.shape[0], k1.shape[0]
            k2g = k2.detach().reshape(g, out // g, mid // g, -1)
            fix = torch.einsum('gomt,gm->got', k2g, delta.reshape(g, mid // g)).reshape(out, 1, *k2.shape[-2:])
        return 'kxk', kernel, bias, fix
    kernel, bias = branch.equivalent_kernel()  # any other branch type: its K×K kernel as it says
    return 'kxk', kernel, bias, None


def linear_form(module: nn.Module) -> LinearForm:
    """Kernel, bias and gradient fix of a linear ``module`` (a conv, a block or a branch; see
    :func:`is_linear`).

    The value equals ``equivalent_kernel()``. The 1×1 terms (1×1 branch, identity) are summed at
    1×1, added into the centre of the 1×K term, and the 1×K and K×1 terms are padded to K×K once
    each, instead of padding every branch kernel to K×K. The fix is a ``[out, 1, K, K]`` kernel
    whose value is exactly zero and whose conv over an all-ones image (with the block's stride,
    padding and dilation) carries the gradient that the per-branch forward sends to the detached
    padding value of the 1×1–K×K / 1×1–AVG branches from the positions inside the image."""
    if isinstance(module, nn.Conv2d):
        kernel, bias = kernel_of(module)
        return kernel, bias, None
    if _is_block(module):
        kernel, bias, fix = linear_form(module.origin)
        branches = list(module.branches.values())
    else:  # a branch on its own
        kernel, bias, fix, branches = None, None, None, [module]
    small = {'1x1': None, '1xk': None, 'kx1': None}
    for shape, k, b, f in (_contribution(branch) for branch in branches):
        fix = _add_fix(fix, f)
        bias = b if bias is None else bias + b
        if shape == 'kxk':
            kernel = k if kernel is None else kernel + k
        else:
            small[shape] = k if small[shape] is None else small[shape] + k
    one, row, col = small['1x1'], small['1xk'], small['kx1']
    c = module.spec.kernel_size // 2
    if one is not None:  # the 1x1 terms go into the centre of the row (or become it)
        row = F.pad(one, [c, c, 0, 0]) if row is None else row + F.pad(one, [c, c, 0, 0])
    for term, pad in ((row, [0, 0, c, c]), (col, [c, c, 0, 0])):
        if term is not None:
            term = F.pad(term, pad)
            kernel = term if kernel is None else kernel + term
    return kernel, bias, fix


def _out_size(size: int, spec: ConvSpec) -> int:
    return (size + 2 * spec.padding - spec.dilation * (spec.kernel_size - 1) - 1) // spec.stride + 1


def worth_merging(branch: nn.Module, x: Tensor) -> bool:
    """Whether folding ``branch`` into the block's conv costs less than running it on ``x``: only a
    1×1–K×K branch can cost more (its kernel product is ``C_out·C_mid·C_in·K²/g²`` multiply-adds)."""
    if not isinstance(branch, Conv1x1KxKBranch):
        return True
    s = branch.spec
    mid = branch.conv1.out_channels
    n, _, h, w = x.shape
    positions_out = n * _out_size(h, s) * _out_size(w, s)
    run = (n * h * w * s.in_channels * mid + positions_out * mid * s.out_channels * s.kernel_size**2) / s.groups
    build = s.out_channels * mid * s.in_channels * s.kernel_size**2 / s.groups**2
    return build < run


#: Below this many output positions (batch x height x width) a block runs per branch: building the
#: kernel (a few passes over ``C_out·C_in·K²`` numbers) then costs about as much as the small
#: branches' convs (measured on CPU: break-even near 130 positions at 512 channels).
MIN_POSITIONS = 256


def plan(block: nn.Module, x: Tensor) -> Tuple[List[str], List[str]]:
    """``(merged, separate)``: the parts of ``block`` (``'origin'`` and branch names) that
    :func:`merged_forward` folds into one conv for input ``x``, and those it runs one by one."""
    s = block.spec
    n, _, h, w = x.shape
    if n * _out_size(h, s) * _out_size(w, s) < MIN_POSITIONS:
        return [], ['origin', *block.branches]
    merged, separate = [], []
    (merged if is_linear(block.origin) else separate).append('origin')
    for name, branch in block.branches.items():
        (merged if is_linear(branch) and worth_merging(branch, x) else separate).append(name)
    return merged, separate


def _train_mode_bn(norm: nn.Module) -> bool:
    """A plain BatchNorm2d normalising with batch statistics and tracking running ones (not
    SyncBN: its statistics span processes)."""
    return (type(norm) is nn.BatchNorm2d and norm.training and norm.track_running_stats and norm.affine
            and norm.running_mean is not None)


#: On a GPU, a 1×1–AVG branch pools first only where ``C_out`` is at least this many times ``C_in`` (an
#: image's channels: the stem). There the grouped forward moves ``C_out`` channels at the input's
#: resolution several times; pooled first, ``C_in``. Elsewhere its extra kernels, and those of the
#: block's other branches, which then run per branch instead of grouped, cost more than it saves. By the
#: model fit to the H200 (``mmdyrep.analysis.roofline``, docs/benchmarks.md), DBB's set on every conv,
#: fp32, batch 64: ResNet-18 3.74x origin against 4.13x with the stem grouped, ResNet-50 1.86x against
#: 1.98x; not yet timed on a GPU. float32 only (see :func:`pool_first_pays`).
GPU_POOL_FIRST_RATIO = 8


def pool_first_pays(branch: nn.Module, x: Tensor) -> bool:
    """Whether :func:`pool_first_forward` applies to ``branch`` on ``x`` and needs fewer multiply-adds
    than the branch's own forward: a 1×1–AVG branch whose middle BN is a training-mode
    ``BatchNorm2d``, in float32/64 without autocast, where ``C_in`` is small next to ``C_out`` or the
    stride is large (the 7×7 stride-2 stem: 3 input channels, 64 output). On a GPU only where
    ``C_out >= GPU_POOL_FIRST_RATIO × C_in`` (elsewhere the grouped forward, :mod:`.grouped_block`,
    launches fewer kernels: see :data:`GPU_POOL_FIRST_RATIO`)."""
    if not isinstance(branch, Conv1x1AvgBranch) or not _train_mode_bn(branch.norm1):
        return False
    if x.dtype not in (torch.float32, torch.float64) or _autocast_dtype(x) is not None:
        return False
    s = branch.spec
    ci, co = s.in_channels, s.out_channels
    if x.device.type != 'cpu' and co < GPU_POOL_FIRST_RATIO * ci:
        return False
    n, _, h, w = x.shape
    positions, positions_out = n * h * w, n * _out_size(h, s) * _out_size(w, s)
    if positions < 2:
        return False
    return positions * ci * ci + positions_out * ci * co < positions * ci * co


def batch_moments_1x1(x: Tensor, weight: Tensor, groups: int) -> Tuple[Tensor, Tensor]:
    """Mean and biased variance over ``(N, H, W)`` of ``conv2d(x, weight, groups=groups)`` (a 1×1
    kernel) per output channel, from the mean and covariance of ``x``: ``W m`` and ``diag(W Σ Wᵀ)``.
    Costs ``N·H·W·C_in²/g`` multiply-adds instead of the conv's ``N·H·W·C_in·C_out/g`` and never
    builds the conv's output."""
    n, c, h, w = x.shape
    mean_x = x.mean((0, 2, 3))
    centred = (x - mean_x.reshape(1, c, 1, 1)).transpose(0, 1).reshape(groups, c // groups, n * h * w)
    cov = centred @ centred.transpose(1, 2) / (n * h * w)  # [g, C_in/g, C_in/g]
    wg = weight.reshape(groups, -1, c // groups)  # [g, C_out/g, C_in/g]
    mean = (wg @ mean_x.reshape(groups, -1, 1)).reshape(-1)
    var = ((wg @ cov) * wg).sum(-1).reshape(-1)
    return mean, var


def update_running_stats(norm: _BatchNorm, mean: Tensor, var: Tensor, count: int) -> None:
    """What a training-mode BN forward does to its buffers, given the batch ``mean`` and biased
    ``var`` over ``count`` values per channel (momentum ``None``: cumulative average)."""
    if norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
    factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    # through ``.data``, as a BN kernel updates them: no version bump. The buffers may be views of one
    # storage shared with other BNs (grouped_block.pack_buffers), whose saved running statistics would
    # otherwise look modified to autograd.
    mean_, var_ = norm.running_mean.data, norm.running_var.data
    with torch.no_grad():
        mean_.mul_(1 - factor).add_(mean.detach().to(mean_), alpha=factor)
        unbiased = var.detach() * (count / (count - 1))
        var_.mul_(1 - factor).add_(unbiased.to(var_), alpha=factor)


def pool_first_forward(branch: nn.Module, x: Tensor) -> Tensor:
    """``branch(x)`` for a 1×1–AVG branch in training mode, averaging ``x`` before the 1×1 conv.

    The branch computes ``BN(avg(pad_c(BN1(W x))))``. With BN1's batch statistics taken from the
    moments of ``x`` (:func:`batch_moments_1x1`), ``BN1(z) = a z + b`` per channel, and since the 1×1
    conv, the per-channel affine map and the average commute,
    ``avg(pad_c(a W x + b)) = a W avg(pad_0(x)) + r b + (1 - r) c``, where ``r`` is the share of each
    window inside the image (an average of ones) and ``c`` the padding value. So the conv runs at the
    output resolution on ``C_in`` pooled channels, and nothing of size ``C_out`` exists at the input
    resolution. Same value, gradients and BN1 running statistics as the branch's forward."""
    s, norm1, weight = branch.spec, branch.norm1, branch.conv.weight
    n, _, h, w = x.shape
    mean, var = batch_moments_1x1(x, weight, s.groups)
    update_running_stats(norm1, mean, var, n * h * w)
    scale = norm1.weight / torch.sqrt(var + norm1.eps)
    shift = norm1.bias - scale * mean
    pad_value = T.bn_scale_shift(norm1)[1].detach()  # as the branch pads: after the statistics update
    pooled = branch.average(F.pad(x, [s.padding] * 4))
    inside = branch.average(F.pad(x.new_ones(1, 1, h, w), [s.padding] * 4))
    u = F.conv2d(pooled, weight * scale.reshape(-1, 1, 1, 1), None, 1, 0, 1, s.groups)
    u = u + inside * (shift - pad_value).reshape(1, -1, 1, 1) + pad_value.reshape(1, -1, 1, 1)
    return branch.norm(u)


def _run(part: nn.Module, x: Tensor) -> Tensor:
    """One part of a block on its own: its forward, or the cheaper exact one where there is one."""
    return pool_first_forward(part, x) if pool_first_pays(part, x) else part(x)


#: Per device type, whether a block whose BNs train runs :func:`~.grouped_block.grouped_forward` (others:
#: yes). Not on CPU: there it measured no faster (one 3x3 block, all branches, grouped / per branch at
#: 64, 128, 256 and 512 channels: 1.14x, 0.88x, 1.05x, 1.01x on 28f35b1, within noise; docs/benchmarks.md).
#: On a GPU it launches 0.66x the kernels and moves 0.96x the bytes of the per-branch forward, counted
#: (still to be timed there: tools/analysis/gpu_check.sh), and costs the host about as much time or more
#: (``block_kernels.py --host``: DyRep's and DBB's sets 0.93-1.0x on one machine, 1.11-1.16x on another;
#: RepVGG's set 1.15-1.21x, 1.34-1.37x).
GROUP_BNS = {'cpu': False}


def merged_forward(block: nn.Module, x: Tensor) -> Tensor:
    """``block(x)`` with every linear part (:func:`plan`) computed as one K×K conv.

    Same value as ``origin(x) + sum(branch(x))`` up to float rounding, and the same gradients
    for every parameter; BNs in training mode still update their running statistics exactly once."""
    # where every BN trains, no branch folds (plan() would merge at most the origin): group them first,
    # without plan()'s walk over every module of the block (host time at every step)
    if (GROUP_BNS.get(x.device.type, True) and can_group(block)
            and not any(pool_first_pays(b, x) for b in block.branches.values())):
        return grouped_forward(block, x)
    merged, separate = plan(block, x)
    if merged in ([], ['origin']):  # nothing to fold: the per-branch forward
        out = block.origin(x)
        for branch in block.branches.values():
            out = out + _run(branch, x)
        return out
    s = block.spec
    parts = [block.origin if name == 'origin' else block.branches[name] for name in merged]
    with torch.autocast(device_type=x.device.type, enabled=False):  # build the kernel in the weights' dtype
        kernel, bias, fix = linear_form(parts[0])
        for part in parts[1:]:
            k, b, f = linear_form(part)
            kernel, bias, fix = kernel + k, bias + b, _add_fix(fix, f)
    out = F.conv2d(x, kernel, bias, s.stride, s.padding, s.dilation, s.groups)
    if fix is not None and fix.requires_grad:
        ones = torch.ones(1, 1, *x.shape[-2:], dtype=fix.dtype, device=fix.device)
        out = out + F.conv2d(ones, fix, None, s.stride, s.padding, s.dilation)
    for name in separate:
        out = out + (block.origin(x) if name == 'origin' else _run(block.branches[name], x))
    return out


__all__ = [
    'GPU_POOL_FIRST_RATIO', 'GROUP_BNS', 'batch_moments_1x1', 'is_linear', 'linear_form', 'merged_forward', 'plan',
    'pool_first_forward', 'pool_first_pays', 'update_running_stats', 'worth_merging'
]
