"""mmdyrep.analysis.ops: the op and byte counts are what each op dispatches, reads and writes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdyrep.analysis.ops import channels_last_like, count, kernel_ops, train_step_counts

_conv_backward = torch.ops.aten.convolution_backward.default


def test_bytes_are_the_tensors_each_op_reads_and_writes():
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    nbytes = a.numel() * a.element_size()

    def work():
        c = a + b  # reads 2, writes 1
        c.add_(a)  # reads c and a, writes c
        c.view(20)  # a view: nothing
        torch.empty(3)  # allocates: counted as an op, moves nothing
        return (c * b[0]).sum()  # b[0] is a view; the product reads c and a 5-element row, writes 20

    ops, moved = count(work)[:2]
    assert ops == {'aten.add': 1, 'aten.add_': 1, 'aten.empty': 1, 'aten.mul': 1, 'aten.sum': 1}
    assert moved['aten.add'] == 3 * nbytes and moved['aten.add_'] == 3 * nbytes and 'aten.empty' not in moved
    assert moved['aten.mul'] == 2 * nbytes + 5 * a.element_size()
    assert moved['aten.sum'] == nbytes + a.element_size()
    assert kernel_ops(ops) == 4


def test_a_conv_bn_train_step():
    """Conv + BN, float64: every op's bytes from the shapes by hand."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)).double().train()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    ops, moved, saved, hidden = train_step_counts(model, x)[:4]
    e = 8
    inp, w, act, c = x.numel() * e, model[0].weight.numel() * e, 2 * 4 * 25 * e, 4 * e
    assert moved['aten.convolution'] == inp + w + act
    assert moved['aten.convolution_backward'] == act + inp + w + inp + w  # reads grad, x, weight; writes two
    # BN forward: input, weight, bias, running stats in; output, batch mean and inverse std out
    assert moved['aten.native_batch_norm'] == act + 4 * c + act + 2 * c
    assert ops['aten.native_batch_norm_backward'] == 1 and x.grad is None and not hidden
    # saved for the backward, beside x, the weights and the BN's buffers: the BN's input and its batch
    # mean and inverse std
    assert saved == act + 2 * c


def test_saved_bytes_count_each_storage_once():
    w = torch.randn(6, 6, requires_grad=True)
    x = torch.randn(6, 6)

    def step():
        h = x @ w  # saves x (left out below): w's gradient needs it; x needs none
        return (h[:3] * h[3:]).sum()  # saves two views of h: its storage once

    assert count(step, exclude=[x]).saved == 36 * 4
    assert count(step).saved == 2 * 36 * 4


def _profiled_copies(fn) -> int:
    """The copies a convolution makes inside itself on CPU: ``contiguous`` calls that clone, under the
    convolution ops of the profiler's tree."""
    with torch.profiler.profile() as prof:
        fn()
    return sum(1 for e in prof.events()
               if e.name == 'aten::contiguous' and e.cpu_parent is not None
               and e.cpu_parent.name in ('aten::_convolution', 'aten::convolution_backward')
               and any(child.name == 'aten::clone' for child in e.cpu_children))


_X = torch.randn(4, 8, 6, 6)
_NHWC = _X.to(memory_format=torch.channels_last)
_W, _G = torch.randn(4, 4, 3, 3), torch.randn(4, 8, 4, 4)


def _backward(grad, x, weight_grad=True):
    return _conv_backward(grad, x, _W, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, weight_grad, False])


@pytest.mark.parametrize('fn, copies', [
    (lambda: F.conv2d(_X[:, :4], _W), 1),  # a channel slice of a batch: not contiguous
    (lambda: F.conv2d(_X[:1, :4], _W), 0),  # of one image: contiguous
    (lambda: F.conv2d(_X[:, :4].contiguous(), _W), 0),
    (lambda: F.conv2d(_X[:1, :4, :1, :1].expand(1, 4, 3, 3), _W), 1),  # expanded
    (lambda: F.conv2d(_NHWC[:, 4:], _W), 2),  # channels-last: the input's slice, and the NCHW weight
    (lambda: _backward(_G[:, :4], _X[:, :4]), 2),  # the output gradient and the input (the weight's gradient)
    (lambda: _backward(_G[:, :4], _X[:, :4].contiguous()), 1),
    (lambda: _backward(_G[:, :4].contiguous(), _NHWC[:, :4].contiguous(memory_format=torch.channels_last)), 2),
])
def test_hidden_copies_are_what_the_cpu_convolutions_make(fn, copies):
    """The copies :func:`hidden_kernels` names are the ones the CPU's convolutions make (profiled), where
    the CPU's rule is cuDNN's."""
    assert count(fn).hidden.get('copy', 0) == copies == _profiled_copies(fn)


def test_hidden_kernels_by_kind():
    x = _X[:, :4].contiguous()
    act = 4 * 4 * 4 * 4 * 4  # the output's bytes
    assert count(lambda: F.conv2d(x, _W)).hidden == {}
    hidden = count(lambda: F.conv2d(x, _W, torch.randn(4)))
    assert hidden.hidden == {'bias': 1} and hidden.hidden_bytes == {'bias': 2 * act + 16}
    assert count(lambda: F.conv2d(x, torch.randn(4, 1, 3, 3), torch.randn(4), groups=4)).hidden == {}  # depthwise
    counted = count(lambda: _backward(_G[:, :4], x, weight_grad=False))
    assert counted.hidden == {'copy': 1} and counted.hidden_bytes == {'copy': 2 * act}
    # the CPU copies the input here too, cuDNN does not (the input's gradient does not read it)
    assert count(lambda: _backward(_G[:, :4].contiguous(), _X[:, :4], weight_grad=False)).hidden == {}
    assert _profiled_copies(lambda: _backward(_G[:, :4].contiguous(), _X[:, :4], weight_grad=False)) == 1
    bias_grad = count(lambda: _conv_backward(_G[:, :4].contiguous(), x, _W, [4], [1, 1], [0, 0], [1, 1], False,
                                             [0, 0], 1, [True, True, True]))
    assert bias_grad.hidden == {'bias_grad': 1} and bias_grad.hidden_bytes == {'bias_grad': act + 16}


def test_channels_last_like_is_what_pytorch_suggests():
    """The public re-statement of ``suggest_memory_format`` against PyTorch's own (a private module)."""
    from torch._prims_common import suggest_memory_format
    nchw = torch.randn(4, 8, 6, 5)
    nhwc = nchw.to(memory_format=torch.channels_last)
    cases = [nchw, nhwc, nchw[:, :4], nhwc[:, 4:], nchw[:2, :4, 1:], torch.randn(8, 8, 1, 1),
             torch.randn(8, 8, 1, 1).to(memory_format=torch.channels_last), torch.randn(1, 8, 1, 1).expand(1, 8, 3, 3),
             torch.randn(8, 1, 3, 3), torch.randn(8, 8, 1, 3), torch.randn(8, 8, 3, 1), nhwc.permute(0, 1, 3, 2),
             torch.randn(5, 1, 1, 1), torch.randn(1, 8, 1, 6).transpose(1, 3)]
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):  # and random layouts: sizes with ones, dimensions permuted, slices
        sizes = [int(v) for v in torch.randint(1, 4, (4, ), generator=generator)]
        order = [int(v) for v in torch.randperm(4, generator=generator)]
        t = torch.randn([sizes[i] for i in order]).permute(*[order.index(i) for i in range(4)])
        cases.append(t[:, :max(t.size(1) - 1, 1)] if torch.rand(1, generator=generator) < 0.3 else t)
    for t in cases:
        assert channels_last_like(t) == (suggest_memory_format(t) == torch.channels_last), (t.shape, t.stride())
