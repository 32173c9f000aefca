"""DyRep blocks in ``torch.channels_last`` memory format (NHWC: the layout of cuDNN's tensor-core convs)
compute what they compute in the default format, and the fast forward keeps that layout.

Float64 on CPU: native kernels. (In float32, oneDNN's channels-last 1x1 stride-2 weight gradient with
fewer input channels than its block, the stem's 1x1 branch, writes past its buffer:
uxlfoundation/oneDNN#6035; ``mmdyrep.analysis.benchmark.onednn_guard``.) Compared: outputs, the input's
and every parameter's gradient, the BN buffers, over two steps (the running statistics move), for the
per-branch forward, the fast forward (as on CPU, and with its BNs grouped as on a GPU) in training mode,
with ``norm_eval`` and in eval mode."""
import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mmdyrep.core import fast_block, grow
from mmdyrep.core.block import set_fast_forward
from mmdyrep.core.grouped_block import can_group
from tests.core.test_fast_block import SPECS, assert_same_grads_and_buffers, make_block, rel, set_bn_mode

CL = torch.channels_last
ALL = ('1x1_kxk', '1x1_avg', '1x1', '1xk', 'kx1', 'residual')
#: (forward, mode): the per-branch reference, the fast forward as on CPU, the fast forward grouped as on a GPU
RUNS = [('per_branch', 'train'), ('per_branch', 'eval'), ('fast', 'train'), ('fast', 'norm_eval'), ('fast', 'eval'),
        ('grouped', 'train')]


def prepare(model: nn.Module, forward: str, mode: str, monkeypatch) -> None:
    set_fast_forward(model, forward != 'per_branch')
    if forward == 'grouped':  # as on a GPU (fast_block.GROUP_BNS): CPU leaves train-mode BNs per branch
        monkeypatch.setitem(fast_block.GROUP_BNS, 'cpu', True)
    model.train(mode != 'eval')
    if mode == 'norm_eval':
        set_bn_mode(model, False)


def assert_same_in_channels_last(model: nn.Module, x: torch.Tensor, tol: float = 1e-12) -> nn.Module:
    """Two steps of ``model`` in the default format and in channels_last: outputs, gradients, buffers."""
    ref, nhwc = copy.deepcopy(model), copy.deepcopy(model).to(memory_format=CL)
    for step in range(2):
        xr, xc = x.clone().requires_grad_(), x.to(memory_format=CL).requires_grad_()
        yr, yc = ref(xr), nhwc(xc)
        assert rel(yc, yr) <= tol, step
        if yc.dim() == 4:
            assert yc.is_contiguous(memory_format=CL)
        w = torch.randn(yr.shape, generator=torch.Generator().manual_seed(step), dtype=yr.dtype)
        (yr * w).sum().backward()
        (yc * (w.contiguous(memory_format=CL) if w.dim() == 4 else w)).sum().backward()
        assert rel(xc.grad, xr.grad) <= tol, step
    assert_same_grads_and_buffers(ref, nhwc, tol)
    return nhwc


@pytest.mark.parametrize('case', ['residual', 'stride2', 'dilation2', 'stem7x7'])
@pytest.mark.parametrize('forward, mode', RUNS)
def test_block_same_in_channels_last(case, forward, mode, monkeypatch):
    """A conv grown with every branch type that fits (``residual`` needs stride 1 and C_in = C_out)."""
    block = make_block(SPECS[case], list(ALL))
    prepare(block, forward, mode, monkeypatch)
    if forward == 'grouped':
        assert can_group(block)
    x = torch.randn(2, SPECS[case][0], 13, 12, dtype=torch.float64)
    assert_same_in_channels_last(block, x)


@pytest.mark.parametrize('forward, mode', RUNS)
def test_resnet18_same_in_channels_last(forward, mode, monkeypatch):
    """A torchvision ResNet-18 grown on the stem, a stride-1, a stride-2 and a dilated conv."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    conv = model.get_submodule('layer3.1.conv1')
    conv.dilation, conv.padding = (2, 2), (2, 2)
    grow(model, ['conv1', 'layer1.0.conv1', 'layer2.0.conv1', 'layer3.1.conv1'])
    model = model.double()
    prepare(model, forward, mode, monkeypatch)
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_same_in_channels_last(model, x, tol=1e-10)


class _LayoutMix(TorchDispatchMode):
    """Records the conv and BN ops (forward and backward) that see a dense NCHW tensor (:func:`_nchw`),
    where everything should be NHWC."""

    OPS = ('aten.convolution', 'aten.convolution_backward', 'aten.native_batch_norm',
           'aten.native_batch_norm_backward')

    def __init__(self):
        super().__init__()
        self.mixed = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if str(func.overloadpacket) in self.OPS:
            outs = out if isinstance(out, (tuple, list)) else [out]
            if any(_nchw(t) for t in list(args) + list(outs)):
                self.mixed.append(str(func))
        return out


def _nchw(t) -> bool:
    """A dense NCHW activation or gradient: 4-D, batch > 1, channels > 1, more than one position, not NHWC."""
    return (isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[0] > 1 and t.shape[1] > 1
            and t.shape[2] * t.shape[3] > 1 and t.is_contiguous() and not t.is_contiguous(memory_format=CL))


@pytest.mark.parametrize('forward, mode', [
    ('grouped', 'train'), ('fast', 'norm_eval'), ('fast', 'eval'), ('per_branch', 'train'),
])
def test_fast_forward_keeps_the_layout(forward, mode, monkeypatch):
    """Every conv and BN of a train step of a channels-last block, forward and backward, reads and
    writes NHWC: no layout copy inside cuDNN. (The grouped forward once summed its branches through an
    NCHW view: an NCHW sum forward and an NCHW gradient into the last BNs' backward.)"""
    block = make_block(SPECS['residual'], list(ALL)).to(memory_format=CL)
    prepare(block, forward, mode, monkeypatch)
    x = torch.randn(2, 6, 16, 16, dtype=torch.float64).to(memory_format=CL).requires_grad_()
    w = torch.randn(2, 6, 16, 16, dtype=torch.float64).to(memory_format=CL)
    block(x)  # packs the BN buffers
    with _LayoutMix() as seen:
        (block(x) * w).sum().backward()
    assert seen.mixed == []
