"""Issue 12's suggested merge, to be measured: one conv for every reader of a block's input, one BN over
their branch channels.

A DyRep block grown with every branch type reads its input ``x`` with six convs: the K×K origin, the
1×K and K×1 branches, the 1×1 branch and the first 1×1 convs of the 1×1–K×K and 1×1–AVG branches.
At stride 1 they all produce the output's size, so they can run as ONE K×K conv whose kernel
concatenates theirs along the output channels, the smaller kernels zero-padded to K×K. The five
branch parts of its output are each normalised by a training-mode BN per channel, so ONE
``batch_norm`` over those channels computes all five (its running statistics updated in place through
the packed buffers of :func:`~mmdyrep.core.grouped_block.pack_buffers`). The 1×K, K×1 and 1×1 outputs
are then summed in one op. The 1×1–K×K and 1×1–AVG branches pad their middle BN's output with its zero
response ``c`` as ``pad_0(t - c) + c`` (one subtraction each; the K×K conv and the average, a depthwise
conv, pad with zeros and the constant they leave out joins their last BN's running mean), as the fast
forward does (:mod:`~mmdyrep.core.grouped_block`); the last BNs and the residual BN, which takes the
origin's bias into its own, run on packed statistics too. Autograd's own backward: nothing recomputed.

:func:`one_conv_forward` is the same function as the per-branch forward, gradients and running
statistics included (tests in float64). It is not a training path. Padding the 1×1, 1×K and K×1
kernels to K×K more than doubles the block's multiply-adds (7.0x a conv + BN's against the fast
forward's 3.1x); it launches fewer kernels and moves a little fewer bytes than the fast forward but
keeps twice its activations; by the model fit to the H200 it is slower in fp32 and about as fast in
bf16 (docs/benchmarks.md). It is here so that :func:`~.benchmark.block_ops` counts it and
``tools/analysis/block_kernels.py`` times it on a GPU (``tools/analysis/gpu_check.sh``), where a
measurement can decide what the model cannot. Pure PyTorch.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdyrep.core.grouped_block import _constant, pack_buffers

#: the branches a block needs (every branch type but nested blocks), and ``(branch, norm)`` of the BNs
#: over the one conv's output, in its channel order after the origin's
BRANCHES = ('1x1', '1x1_kxk', '1x1_avg', '1xk', 'kx1', 'residual')
_FIRST_NORMS = (('1xk', 'norm'), ('kx1', 'norm'), ('1x1', 'norm'), ('1x1_kxk', 'norm1'), ('1x1_avg', 'norm1'))


def _norms(block: nn.Module) -> List[nn.BatchNorm2d]:
    """The block's BNs in the order their buffers are packed: those over the one conv's output, the residual
    BN, the last BNs of the 1×1–K×K and 1×1–AVG branches."""
    br = block.branches
    return ([getattr(br[name], attr) for name, attr in _FIRST_NORMS]
            + [br['residual'].norm, br['1x1_kxk'].norm, br['1x1_avg'].norm])


def check_block(block: nn.Module) -> None:
    """Raise a ``ValueError`` saying why :func:`one_conv_forward` cannot compute ``block``: it needs exactly
    the branches of :data:`BRANCHES` (the K×K inside the 1×1–K×K a plain conv), stride 1, ``groups == 1``,
    the centred padding (nothing cropped) and plain ``nn.BatchNorm2d`` in training mode with one ``eps``
    and a ``momentum``."""
    s = block.spec
    if sorted(block.branches) != sorted(BRANCHES):
        raise ValueError(f"one_conv_forward needs the branches {', '.join(BRANCHES)}; the block has "
                         f"{', '.join(block.branches) or 'none'}")
    if s.stride != 1 or s.groups != 1 or s.padding != s.dilation * (s.kernel_size // 2):
        raise ValueError(f'one_conv_forward needs stride 1, groups 1 and padding = dilation x (K // 2); the block '
                         f'has stride {s.stride}, groups {s.groups}, padding {s.padding}, dilation {s.dilation}, '
                         f'K = {s.kernel_size}')
    if type(block.origin) is not nn.Conv2d or type(block.branches['1x1_kxk'].kxk) is not nn.Conv2d:
        raise ValueError('one_conv_forward needs plain convs (the origin and the K×K of 1x1_kxk), not nested blocks')
    norms = _norms(block)
    if not all(type(n) is nn.BatchNorm2d and n.training and n.affine and n.track_running_stats
               and n.momentum is not None for n in norms):
        raise ValueError('one_conv_forward needs nn.BatchNorm2d in training mode, with affine parameters, '
                         'running statistics and a momentum')
    if len({n.eps for n in norms}) != 1 or len({n.momentum for n in norms}) != 1:
        raise ValueError("one_conv_forward needs one eps and one momentum for the block's BNs")


def one_conv_forward(block: nn.Module, x: Tensor) -> Tensor:
    """``block(x)`` with every conv that reads ``x`` run as one conv and their BNs as one (see the module
    docstring). For a block :func:`check_block` accepts: not checked here, which would add host time to
    every step (:class:`OneConvBlock` checks once). Two constant tensors are kept on ``block`` between calls,
    as the fast forward keeps its own."""
    s, br = block.spec, block.branches
    k, c, m, eps = s.kernel_size, s.kernel_size // 2, br['1xk'].norm.momentum, br['1xk'].norm.eps
    out_c, mid_c = s.out_channels, br['1x1_kxk'].conv1.out_channels
    ones = torch.cat([br['1x1'].conv.weight, br['1x1_kxk'].conv1.weight, br['1x1_avg'].conv.weight])
    kernel = torch.cat([block.origin.weight, F.pad(br['1xk'].conv.weight, [0, 0, c, c]),
                        F.pad(br['kx1'].conv.weight, [c, c, 0, 0]), F.pad(ones, [c] * 4)])
    width = 4 * out_c + mid_c  # the branch channels of the one conv's output
    z_origin, z_branches = F.conv2d(x, kernel, None, 1, s.padding, s.dilation).split([out_c, width], 1)
    norms = _norms(block)
    mean, var, counter = pack_buffers(norms)  # in place: the BNs' own buffers are views of these
    with torch.no_grad():
        counter.add_(1)
    gamma, beta = torch.cat([n.weight for n in norms[:5]]), torch.cat([n.bias for n in norms[:5]])
    y = F.batch_norm(z_branches, mean[:width], var[:width], gamma, beta, True, m, eps)
    three, mid, avg_in = y.split([3 * out_c, mid_c, out_c], 1)
    out = z_origin + three.unflatten(1, (3, out_c)).sum(1)
    # the 1x1-KxK and 1x1-AVG branches pad with their middle BN's zero response c (running statistics, as just
    # updated; detached): pad_c(t) = pad_0(t - c) + c, so the K×K conv and the average pad with zeros, and
    # the constant they then leave out (sum W c, and c) is a constant per channel before a training-mode BN:
    # it changes only that BN's running mean, added below
    size, padded = s.dilation * (k - 1) + 1, slice(3 * out_c, width)
    with torch.no_grad():  # c as a size x size image, so that one conv of it gives sum W c
        zeros = _constant(block, '_one_conv_zeros', (1, mid_c + out_c, size, size), 0.0, y)
        zero = F.batch_norm(zeros, mean[padded], var[padded], gamma[padded], beta[padded], False, 0.0, eps)
    zero_mid, zero_avg = zero.split([mid_c, out_c], 1)
    kxk = br['1x1_kxk'].kxk.weight
    u = F.conv2d(mid - zero_mid[:, :, :1, :1], kxk, None, 1, s.padding, s.dilation)
    average = _constant(block, '_one_conv_average', (out_c, 1, k, k), 1.0 / k**2, y)
    v = F.conv2d(avg_in - zero_avg[:, :, :1, :1], average, None, 1, s.padding, s.dilation, out_c)
    residual, last_kxk, last_avg = norms[5:]
    bias = residual.bias if block.origin.bias is None else residual.bias + block.origin.bias
    at = width
    for t, norm, b in ((x, residual, bias), (u, last_kxk, last_kxk.bias), (v, last_avg, last_avg.bias)):
        out = out + F.batch_norm(t, mean[at:at + out_c], var[at:at + out_c], norm.weight, b, True, m, eps)
        at += out_c
    with torch.no_grad():
        constant = torch.cat([F.conv2d(zero_mid, kxk, None, 1, 0, s.dilation).reshape(-1), zero_avg[0, :, 0, 0]])
        mean.data[width + out_c:].add_(constant, alpha=m)  # through .data, as a BN kernel updates it: the BNs
        # above saved views of ``mean`` for their backward, and a version bump would fail it
    return out


class OneConvBlock(nn.Module):
    """A block whose forward in training mode is :func:`one_conv_forward` (the block stays its child, with its
    parameters; checked by :func:`check_block` when wrapped); in eval mode the block's own forward."""

    def __init__(self, block: nn.Module):
        super().__init__()
        check_block(block)
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return one_conv_forward(self.block, x) if self.training else self.block(x)


__all__ = ['BRANCHES', 'OneConvBlock', 'check_block', 'one_conv_forward']
