"""mmdyrep.analysis.ops: the op and byte counts are what each op dispatches, reads and writes."""
import torch
from torch import nn

from mmdyrep.analysis.ops import count, kernel_ops, train_step_counts


def test_bytes_are_the_tensors_each_op_reads_and_writes():
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    nbytes = a.numel() * a.element_size()

    def work():
        c = a + b  # reads 2, writes 1
        c.add_(a)  # reads c and a, writes c
        c.view(20)  # a view: nothing
        torch.empty(3)  # allocates: counted as an op, moves nothing
        return (c * b[0]).sum()  # b[0] is a view; the product reads c and a 5-element row, writes 20

    ops, moved, _ = count(work)
    assert ops == {'aten.add': 1, 'aten.add_': 1, 'aten.empty': 1, 'aten.mul': 1, 'aten.sum': 1}
    assert moved['aten.add'] == 3 * nbytes and moved['aten.add_'] == 3 * nbytes and 'aten.empty' not in moved
    assert moved['aten.mul'] == 2 * nbytes + 5 * a.element_size()
    assert moved['aten.sum'] == nbytes + a.element_size()
    assert kernel_ops(ops) == 4


def test_a_conv_bn_train_step():
    """Conv + BN, float64: every op's bytes from the shapes by hand."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)).double().train()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    ops, moved, saved = train_step_counts(model, x)
    e = 8
    inp, w, act, c = x.numel() * e, model[0].weight.numel() * e, 2 * 4 * 25 * e, 4 * e
    assert moved['aten.convolution'] == inp + w + act
    assert moved['aten.convolution_backward'] == act + inp + w + inp + w  # reads grad, x, weight; writes two
    # BN forward: input, weight, bias, running stats in; output, batch mean and inverse std out
    assert moved['aten.native_batch_norm'] == act + 4 * c + act + 2 * c
    assert ops['aten.native_batch_norm_backward'] == 1 and x.grad is None
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
