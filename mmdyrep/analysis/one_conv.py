"""Issue 12's suggested merge, to be measured: one conv for every reader of a block's input, one BN over
their branch channels.

A DyRep block grown with every branch type reads its input ``x`` with six convs: the K×K origin, the
1×K and K×1 branches, the 1×1 branch and the first 1×1 convs of the 1×1–K×K and 1×1–AVG branches.
At stride 1 they all produce the output's size, so they can run as ONE K×K conv whose kernel
concatenates theirs along the output channels, the smaller kernels zero-padded to K×K. The five
branch parts of its output are each normalised by a training-mode BN per channel, so ONE
``batch_norm`` over those channels computes all five (its running statistics updated in place through
the packed buffers of :func:`~mmdyrep.core.grouped_block.pack_buffers`). The 1×K, K×1 and 1×1 outputs
are then summed in one op; the 1×1–K×K and 1×1–AVG branches go on as in their own forward (padding
with their middle BN's zero response, K×K conv or average, last BN), and the residual BN takes the
origin's bias into its own. Autograd's own backward.

:func:`one_conv_forward` is the same function as the per-branch forward, gradients and running
statistics included (tests in float64). It is not a training path: padding the 1×1, 1×K and K×1
kernels to K×K more than doubles the block's multiply-adds, and the counts and the model fit to the
H200 price that above the launches it saves (docs/benchmarks.md). It is here so that
:func:`~.benchmark.block_ops` counts it and ``tools/analysis/block_kernels.py`` times it on a GPU
(``tools/analysis/gpu_check.sh``), where a measurement can overrule the model. Pure PyTorch.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdyrep.core import transforms as T
from mmdyrep.core.grouped_block import pack_buffers

#: the branches a block needs (every branch type but nested blocks), and ``(branch, norm)`` of the BNs
#: over the one conv's output, in its channel order after the origin's
BRANCHES = ('1x1', '1x1_kxk', '1x1_avg', '1xk', 'kx1', 'residual')
_FIRST_NORMS = (('1xk', 'norm'), ('kx1', 'norm'), ('1x1', 'norm'), ('1x1_kxk', 'norm1'), ('1x1_avg', 'norm1'))


def _norms(block: nn.Module) -> List[nn.BatchNorm2d]:
    """The BNs the one conv's output and the residual go through, in the order their buffers are packed."""
    br = block.branches
    return [getattr(br[name], attr) for name, attr in _FIRST_NORMS] + [br['residual'].norm]


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
    norms = _norms(block) + [block.branches[n].norm for n in ('1x1_kxk', '1x1_avg')]
    if not all(type(n) is nn.BatchNorm2d and n.training and n.affine and n.track_running_stats
               and n.momentum is not None for n in norms):
        raise ValueError('one_conv_forward needs nn.BatchNorm2d in training mode, with affine parameters, '
                         'running statistics and a momentum')
    if len({n.eps for n in norms}) != 1 or len({n.momentum for n in norms}) != 1:
        raise ValueError("one_conv_forward needs one eps and one momentum for the block's BNs")


def one_conv_forward(block: nn.Module, x: Tensor) -> Tensor:
    """``block(x)`` with every conv that reads ``x`` run as one conv and their BNs as one (see the module
    docstring). For a block :func:`check_block` accepts: not checked here, which would add host time to
    every step (:class:`OneConvBlock` checks once)."""
    s, br = block.spec, block.branches
    c = s.kernel_size // 2
    ones = torch.cat([br['1x1'].conv.weight, br['1x1_kxk'].conv1.weight, br['1x1_avg'].conv.weight])
    kernel = torch.cat([block.origin.weight, F.pad(br['1xk'].conv.weight, [0, 0, c, c]),
                        F.pad(br['kx1'].conv.weight, [c, c, 0, 0]), F.pad(ones, [c] * 4)])
    z = F.conv2d(x, kernel, None, 1, s.padding, s.dilation)
    norms = _norms(block)
    mean, var, counter = pack_buffers(norms)
    first = norms[:-1]
    width = sum(n.num_features for n in first)
    y = F.batch_norm(z[:, block.origin.out_channels:], mean[:width], var[:width],
                     torch.cat([n.weight for n in first]), torch.cat([n.bias for n in first]), True,
                     first[0].momentum, first[0].eps)
    out_c = s.out_channels
    out = z[:, :out_c] + y[:, :3 * out_c].unflatten(1, (3, out_c)).sum(1)
    mids = y[:, 3 * out_c:].split([br['1x1_kxk'].conv1.out_channels, out_c], 1)
    for name, mid in zip(('1x1_kxk', '1x1_avg'), mids):
        branch = br[name]
        padded = T.constant_pad(mid, s.padding, T.bn_scale_shift(branch.norm1)[1].detach())
        out = out + branch.norm(branch.kxk(padded) if name == '1x1_kxk' else branch.average(padded))
    residual = norms[-1]
    bias = residual.bias if block.origin.bias is None else residual.bias + block.origin.bias
    out = out + F.batch_norm(x, mean[width:], var[width:], residual.weight, bias, True, residual.momentum,
                             residual.eps)
    with torch.no_grad():
        counter.add_(1)
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
