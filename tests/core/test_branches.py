"""Each branch equals the K×K conv it reports (Sec. 3), over every shape ResNets use."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdyrep.core import BRANCH_TYPES, ConvSpec, UnsupportedConvError, build_branch
from mmdyrep.core import transforms as T
from mmdyrep.core.branches import default_norm_factory
from .conftest import rel_err

BOUNDS = {torch.float64: 1e-9, torch.float32: 1e-5}

# (in, out, groups): equal channels, in != out with groups, depthwise
CHANNELS = [(8, 8, 1), (8, 16, 2), (8, 8, 8)]
GRID = list(itertools.product([3, 5, 7], [1, 2], [1, 2, 4], CHANNELS, ['centred', 'zero']))


def randomise_norms(module, generator):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator))
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=generator))
            m.bias.data.copy_(torch.randn(n, generator=generator))


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('branch_type', BRANCH_TYPES)
def test_branch_equals_its_kernel(branch_type, dtype):
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for k, s, d, (cin, cout, g), padding in GRID:
        pad = d * (k // 2) if padding == 'centred' else 0  # 0: the K×K inside a 1x1_kxk branch
        spec = ConvSpec.from_conv(nn.Conv2d(cin, cout, k, s, pad, d, groups=g))
        if spec.allows(branch_type):
            continue
        branch = build_branch(branch_type, spec, default_norm_factory).to(dtype)
        with torch.no_grad():
            branch.reset_parameters(0.5)
            randomise_norms(branch, generator)
        branch.eval()
        size = 13 if padding == 'centred' else d * (k - 1) + 7
        x = torch.randn(2, cin, size, size + 2, generator=generator).to(dtype)
        with torch.no_grad():
            out = branch(x)
            kernel, bias = branch.equivalent_kernel()
            expected = F.conv2d(x, kernel, bias, s, pad, d, g)
        assert kernel.shape == (cout, cin // g, k, k)
        assert out.shape == expected.shape, (k, s, d, cin, cout, g, padding)
        assert rel_err(out, expected) <= BOUNDS[dtype], (k, s, d, cin, cout, g, padding)
        checked += 1
    # residual exists only for stride 1 and in == out
    assert checked == (len(GRID) if branch_type != 'residual' else len(GRID) // 3)


def test_transforms_match_sequential_ops():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 9, 9, generator=g, dtype=torch.float64)
    bn = nn.BatchNorm2d(6).double().eval()
    randomise_norms(bn, g)
    k = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    fk, fb = T.fuse_bn(k, b, bn)
    assert rel_err(F.conv2d(x, fk, fb, 1, 1, 1, 2), bn(F.conv2d(x, k, b, 1, 1, 1, 2))) < 1e-12
    # 1x1 then KxK (groups 2), intermediate padded with the 1x1's bias
    k1, b1 = torch.randn(4, 2, 1, 1, generator=g, dtype=torch.float64), torch.randn(4, generator=g,
                                                                                   dtype=torch.float64)
    k2, b2 = torch.randn(6, 2, 3, 3, generator=g, dtype=torch.float64), torch.randn(6, generator=g,
                                                                                   dtype=torch.float64)
    y = T.constant_pad(F.conv2d(x, k1, b1, groups=2), 1, b1)
    mk, mb = T.merge_1x1_kxk((k1, b1), (k2, b2), groups=2)
    assert rel_err(F.conv2d(x, mk, mb, 1, 1, 1, 2), F.conv2d(y, k2, b2, groups=2)) < 1e-12
    # a conv bias folded into the following BN
    y = bn(F.conv2d(x, k, b, 1, 1, 1, 2))
    T.fold_bias_into_bn(b, bn)
    assert rel_err(bn(F.conv2d(x, k, None, 1, 1, 1, 2)), y) < 1e-12
    # identity and centring
    ident = T.identity_kernel(4, 2, 5, dtype=torch.float64, device=x.device)
    assert torch.equal(F.conv2d(x, ident, None, 1, 2, 1, 2), x)
    assert T.pad_to_kernel(torch.ones(1, 1, 1, 3), 5).shape == (1, 1, 5, 5)
    with pytest.raises(ValueError):
        T.pad_to_kernel(torch.ones(1, 1, 2, 2), 5)


@pytest.mark.parametrize('pad', [1, 3])
def test_constant_pad_equals_reference_with_gradients(pad):
    """One-pass constant_pad == F.pad(x - v) + v: value, first and second derivatives (GraSP)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    out = T.constant_pad(x, pad, v)
    ref = F.pad(x - v.reshape(1, -1, 1, 1), [pad] * 4) + v.reshape(1, -1, 1, 1)
    assert torch.allclose(out, ref, rtol=0, atol=1e-14)  # the reference rounds x - v + v
    assert torch.equal(out[:, :, pad:-pad, pad:-pad], x)  # this one keeps x exactly
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    gx, gv = torch.autograd.grad((out * w).sum(), (x, v))
    rx, rv = torch.autograd.grad((ref * w).sum(), (x, v))
    assert torch.allclose(gx, rx, rtol=0, atol=1e-12) and torch.allclose(gv, rv, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: T.constant_pad(a, pad, b), (x, v))
    assert torch.autograd.gradgradcheck(lambda a, b: T.constant_pad(a, pad, b) ** 2, (x, v))
    assert T.constant_pad(x, 0, v) is x
    half = T.constant_pad(x.detach().float(), pad, v.detach())  # value cast to the input's dtype
    assert half.dtype == torch.float32 and torch.allclose(half.double(), ref.detach(), atol=1e-6)


@pytest.mark.parametrize('k, s, d', [(3, 1, 1), (3, 2, 1), (7, 2, 1), (3, 1, 2)])
def test_1x1_avg_average_equals_pooling(k, s, d):
    """The 1x1-AVG branch's K×K average (a depthwise conv on CPU) is avg_pool2d's (of the dilated
    window, for d > 1), value and gradient, in float64 and float32."""
    g = torch.Generator().manual_seed(k + s + d)
    branch = build_branch('1x1_avg', ConvSpec.from_conv(nn.Conv2d(6, 6, k, s, d * (k // 2), d)),
                          default_norm_factory)
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-6)):
        y = torch.randn(2, 6, 13, 11, generator=g, dtype=dtype, requires_grad=True)
        w = torch.randn(1, generator=g, dtype=dtype)  # scale the loss: the gradient is not trivially 1/K²
        if d == 1:
            ref = F.avg_pool2d(y, k, s)
        else:  # average of the d-spaced taps: pool every dilation phase, keep the strided window starts
            taps = [y[:, :, i * d:, j * d:][:, :, :y.shape[2] - (k - 1) * d, :y.shape[3] - (k - 1) * d]
                    for i in range(k) for j in range(k)]
            ref = (sum(taps) / k**2)[:, :, ::s, ::s]
        out = branch.average(y)
        assert out.shape == ref.shape and rel_err(out, ref) < tol
        target = torch.randn(out.shape, generator=g, dtype=dtype)
        got, = torch.autograd.grad((out * target * w).sum(), y)
        want, = torch.autograd.grad((ref * target * w).sum(), y)
        assert rel_err(got, want) < tol


@pytest.mark.parametrize('conv, reason', [
    (nn.Conv2d(4, 4, 1), '1x1'),
    (nn.Conv2d(4, 4, 4, padding=2), 'even kernel'),
    (nn.Conv2d(4, 4, (1, 3), padding=(0, 1)), 'kernel size'),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode='reflect'), 'padding_mode'),
    (nn.Conv2d(4, 4, 3, stride=(1, 2), padding=1), 'stride'),
    (nn.Conv2d(4, 4, 3, padding=(1, 0)), 'padding'),
    (nn.Linear(4, 4), 'nn.Conv2d'),
])
def test_unsupported_convs_are_named(conv, reason):
    with pytest.raises(UnsupportedConvError, match=rf'layer4\.x: .*{reason}'):
        ConvSpec.from_conv(conv, 'layer4.x')


def test_residual_only_where_defined():
    assert 'residual' not in ConvSpec.from_conv(nn.Conv2d(4, 4, 3, 2, 1)).valid_branches()
    assert 'residual' not in ConvSpec.from_conv(nn.Conv2d(4, 8, 3, 1, 1)).valid_branches()
    assert 'residual' in ConvSpec.from_conv(nn.Conv2d(4, 4, 3, 1, 1)).valid_branches()
    with pytest.raises(UnsupportedConvError, match='stride 1'):
        build_branch('residual', ConvSpec.from_conv(nn.Conv2d(4, 4, 3, 2, 1)), default_norm_factory)


def test_relative_error_and_the_eq_6_eq_10_functions():
    from mmdyrep.core.transforms import dep_origin, relative_error, rep_origin
    b = torch.tensor([1.0, -4.0, 2.0], dtype=torch.float64)
    assert relative_error(b + torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64), b) == pytest.approx(0.1)
    assert relative_error(b.half(), b) == 0.0  # compared in float32 at least
    k, bias = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    added = (torch.randn_like(k), torch.randn_like(bias))
    after_rep = rep_origin((k, bias), added)
    back = dep_origin(after_rep, added)  # Dep of what Rep added gives the origin back
    assert torch.allclose(back[0], k, atol=1e-12) and torch.allclose(back[1], bias, atol=1e-12)
    assert torch.allclose(after_rep[0] + added[0], k, atol=1e-12)


@pytest.mark.parametrize('s, d', [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_branch_macs_as_complexity_counts_them(s, d):
    """``branch_macs`` is the conv multiply-accumulates ``models.complexity.count`` traces in the branch
    (what a grow adds, so ``training_cost.grow_cost`` can plan grows without building them), for every
    branch type, K 3 and 5, grouped or not."""
    from mmdyrep.core.branches import branch_macs
    from mmdyrep.models.complexity import count
    checked = set()
    for k, (cin, cout, g) in itertools.product((3, 5), ((8, 8, 1), (8, 16, 2))):
        conv = nn.Conv2d(cin, cout, k, s, d * (k // 2), d, groups=g, bias=False)
        spec = ConvSpec.from_conv(conv)
        h, w = 13, 10
        out = conv(torch.zeros(1, cin, h, w))
        for branch_type in spec.valid_branches():
            branch = build_branch(branch_type, spec, default_norm_factory)
            expected = count(branch, (cin, h, w))['flops']
            assert branch_macs(branch_type, spec, h * w, out.shape[-2] * out.shape[-1]) == expected, (
                branch_type, k, cin, cout, g)
            checked.add(branch_type)
    assert checked == (set(BRANCH_TYPES) if s == 1 else set(BRANCH_TYPES) - {'residual'})
    with pytest.raises(UnsupportedConvError, match='unknown branch type'):
        branch_macs('3x3', spec, 1, 1)
