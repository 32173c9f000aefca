"""Issue 12's suggested merge (mmdyrep.analysis.one_conv): the same function as the per-branch forward of a
fully grown block, gradients and running statistics included, and what it costs by the counts."""
import copy

import pytest
import torch
from torch import nn

from mmdyrep.analysis import benchmark
from mmdyrep.analysis.one_conv import OneConvBlock, check_block
from mmdyrep.core import grow
from mmdyrep.core.transforms import relative_error
from mmdyrep.core.block import set_fast_forward


def _grown(dilation: int = 1, stride: int = 1, branches=None, channels: int = 6, dtype=torch.float64, padding=None):
    torch.manual_seed(0)
    padding = dilation if padding is None else padding
    model = nn.Sequential(nn.Conv2d(channels, channels, 3, stride, padding, dilation, bias=False),
                          nn.BatchNorm2d(channels))
    grow(model, ['0'], branches)
    model = model.to(dtype).train()
    set_fast_forward(model, False)
    for m in model.modules():  # BNs far from their initial state, so that every term shows
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    if model[0].origin.bias is not None:
        model[0].origin.bias.data.normal_()
    return model[0]


@pytest.mark.parametrize('dtype,bound', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize('dilation', [1, 2])
def test_same_function_gradients_and_statistics_as_per_branch(dtype, bound, dilation):
    block = _grown(dilation, dtype=dtype)
    merged = OneConvBlock(copy.deepcopy(block))
    x = torch.randn(3, 6, 9, 11, dtype=dtype, requires_grad=True)
    grad = torch.randn(3, 6, 9, 11, dtype=dtype)
    for step in range(2):  # the second step pads with statistics the first one updated
        ref, out = block(x), merged(x)
        assert relative_error(out, ref) < bound, step
        ref_grads = torch.autograd.grad(ref, [x, *block.parameters()], grad)
        grads = torch.autograd.grad(out, [x, *merged.block.parameters()], grad)
        names = ['input'] + [n for n, _ in block.named_parameters()]
        for name, got, want in zip(names, grads, ref_grads):
            assert relative_error(got, want) < bound, (step, name)
        for (name, want), got in zip(block.named_buffers(), merged.block.buffers()):
            assert relative_error(got, want) < bound, (step, name)
    assert merged.block.branches['1xk'].norm.num_batches_tracked.item() == 2


def test_eval_mode_runs_the_blocks_own_forward():
    block = _grown()
    merged = OneConvBlock(copy.deepcopy(block)).eval()
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    assert relative_error(merged(x), block.eval()(x)) < 1e-12


@pytest.mark.parametrize('kwargs,said', [
    (dict(stride=2), 'needs the branches .* the block has 1x1_kxk, 1x1_avg, 1x1, 1xk, kx1$'),  # no residual
    (dict(branches=['1x1_kxk', '1x1_avg', '1x1']), 'needs the branches'),
    (dict(dilation=2, padding=1), r'padding = dilation x \(K // 2\); the block has .* padding 1, dilation 2'),
])
def test_blocks_it_cannot_compute_are_named(kwargs, said):
    with pytest.raises(ValueError, match=said):
        OneConvBlock(_grown(**kwargs))


def test_bns_in_eval_mode_are_refused():
    block = _grown()
    block.branches['1xk'].norm.eval()
    with pytest.raises(ValueError, match='training mode'):
        check_block(block)


def test_counted_it_misses_the_op_target_too_and_pads_its_multiply_adds():
    """At C = 16, 2 x 8 x 8 (the default block, C = 64 at 64 x 56 x 56, measured 55 ops (6.9x), 7.0x the
    multiply-adds and 11.0x the saved bytes of a conv + BN, against the fast forward's 53, 3.1x and 5.0x:
    docs/benchmarks.md)."""
    ops = benchmark.block_ops(channels=16, size=8, batch=2)
    one, fast = ops['dyrep+one-conv'], ops['dyrep+fast']
    assert one['ratio'] > 4  # issue 12's target for a fully grown block: <= 4x a conv + BN's ops
    assert one['kernels'] < ops['dyrep']['kernels']
    # one 3x3 conv with 6x the output channels, and the 1x1-KxK's second 3x3: 7x the conv's, forward and backward
    assert one['macs_ratio'] == pytest.approx(7.0, rel=0.01)
    assert fast['macs_ratio'] < 0.5 * one['macs_ratio']
    assert one['memory'] > 1.5 * fast['memory']  # nothing recomputed in the backward
