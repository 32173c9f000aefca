"""merged_forward (mmdyrep.core.fast_block) equals the per-branch forward of a DyRep block, in
float64 to 1e-9: outputs, gradients of every parameter and of the input, BN running statistics."""
import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdyrep.core import DyRepBlock, grow, iter_blocks
from mmdyrep.core import fast_block
from mmdyrep.core.block import set_fast_forward
from mmdyrep.core.fast_block import is_linear, merged_forward, plan

TOL = 1e-9
SPECS = {  # in, out, K, stride, padding, dilation, groups
    'cin!=cout': (4, 6, 3, 1, 1, 1, 1),
    'residual': (6, 6, 3, 1, 1, 1, 1),
    'stride2': (6, 6, 3, 2, 1, 1, 1),
    'dilation2': (6, 6, 3, 1, 2, 2, 1),
    'groups2': (8, 8, 3, 1, 1, 1, 2),
    'stem7x7': (3, 8, 7, 2, 3, 1, 1),
    'padding0': (6, 6, 3, 1, 0, 1, 1),
    'K5_padding1_crop': (6, 6, 5, 1, 1, 1, 1),
}


def randomise_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64))
            elif isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64) * 0.3)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64))


def make_block(spec, branches=None, nested=(), seed=0) -> DyRepBlock:
    cin, cout, k, stride, padding, dilation, groups = spec
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False)).double()
    grow(model, ['0'], branches, skip_unfit=True)
    for name in nested:
        grow(model, [f'0.{name}'], skip_unfit=True)
    randomise_(model, seed + 1)
    return model[0]


def set_bn_mode(module, train: bool, only=None):
    for name, m in module.named_modules():
        if isinstance(m, _BatchNorm) and (only is None or only(name)):
            m.train(train)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def assert_same_grads_and_buffers(ref: nn.Module, other: nn.Module, tol: float = 1e-12) -> None:
    """Every parameter's gradient of ``other`` equals ``ref``'s within ``tol`` times the largest gradient
    (a gradient that is zero in exact arithmetic, a bias before a batch-statistics BN, is rounding on
    both sides), and every buffer within ``tol`` (relative and absolute)."""
    scale = max(p.grad.abs().max().item() for p in ref.parameters() if p.grad is not None)
    for (name, pr), po in zip(ref.named_parameters(), other.parameters()):
        assert (pr.grad is None) == (po.grad is None), name
        if pr.grad is not None:
            assert (pr.grad - po.grad).abs().max().item() <= tol * scale, name
    for (name, br), bo in zip(ref.named_buffers(), other.buffers()):
        assert torch.allclose(bo.double(), br.double(), rtol=tol, atol=tol), name


def assert_same(block, x, prepare):
    """Reference ``block(x)`` vs ``merged_forward`` on a deep copy: value, all gradients, BN buffers."""
    ref, fast = copy.deepcopy(block), copy.deepcopy(block)
    set_fast_forward(ref, False)  # the per-branch reference (the default is the fast forward)
    prepare(ref)
    prepare(fast)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), merged_forward(fast, xf)
    assert yr.shape == yf.shape
    assert rel(yf, yr) <= TOL
    w = torch.randn(yr.shape, generator=torch.Generator().manual_seed(5), dtype=yr.dtype)
    (yr * w).sum().backward()
    (yf * w).sum().backward()
    assert rel(xf.grad, xr.grad) <= TOL
    for (name, pr), (_, pf) in zip(ref.named_parameters(), fast.named_parameters()):
        if pr.grad is None:
            assert pf.grad is None or not pf.grad.abs().max(), name
            continue
        assert pf.grad is not None, name
        assert rel(pf.grad, pr.grad) <= TOL, (name, rel(pf.grad, pr.grad))
    for (name, br), (_, bf) in zip(ref.named_buffers(), fast.named_buffers()):
        assert torch.equal(br, bf) or rel(bf.double(), br.double()) <= TOL, name
    return fast


def norm_eval(block):
    """mmdet's norm_eval=True: the block trains, its BNs use running statistics."""
    block.train()
    set_bn_mode(block, False)


@pytest.mark.parametrize('case', list(SPECS))
def test_norm_eval_all_branches_merge_exactly(case):
    block = make_block(SPECS[case])
    x = torch.randn(2, SPECS[case][0], 23, 25, dtype=torch.float64)
    norm_eval(block)
    merged, separate = plan(block, x)
    assert separate == [] and merged == ['origin', *block.branches]  # everything in one conv
    assert_same(block, x, norm_eval)


@pytest.mark.parametrize('case, branch', [
    (case, branch) for case in ('residual', 'stride2', 'K5_padding1_crop')
    for branch in ('1x1_kxk', '1x1_avg', '1x1', '1xk', 'kx1', 'residual')
    if branch != 'residual' or SPECS[case][3] == 1  # residual exists for stride 1 only
])
def test_each_branch_alone(case, branch):
    block = make_block(SPECS[case], [branch])
    assert_same(block, torch.randn(2, SPECS[case][0], 24, 22, dtype=torch.float64), norm_eval)


@pytest.mark.parametrize('case', ['residual', 'stride2', 'groups2'])
def test_nested_blocks(case):
    block = make_block(SPECS[case], nested=['origin', 'branches.1x1_kxk.kxk'])
    assert isinstance(block.origin, DyRepBlock) and isinstance(block.branches['1x1_kxk'].kxk, DyRepBlock)
    x = torch.randn(2, SPECS[case][0], 23, 24, dtype=torch.float64)
    norm_eval(block)
    assert plan(block, x)[1] == []
    assert_same(block, x, norm_eval)
    assert_same(block, x, lambda b: b.eval())  # eval mode: the same conv, without gradients to mind


def test_train_mode_bns_run_per_branch():
    """BN in training mode (batch statistics): nothing folds but the origin; running stats update once."""
    block = make_block(SPECS['residual'], nested=['branches.1x1_kxk.kxk'])
    x = torch.randn(3, 6, 12, 12, dtype=torch.float64)
    block.train()
    assert not any(is_linear(b) for b in block.branches.values())
    assert plan(block, x) == (['origin'], list(block.branches))
    fast = assert_same(block, x, lambda b: b.train())
    assert int(fast.branches['1x1'].norm.num_batches_tracked) == 1


def test_mixed_modes_merge_only_the_linear_branches():
    """e.g. BN calibration: new branches' BNs train, the others use running statistics."""
    block = make_block(SPECS['dilation2'], nested=['origin'])
    x = torch.randn(2, 6, 16, 16, dtype=torch.float64)

    def prepare(b):
        b.train()
        set_bn_mode(b, False)
        set_bn_mode(b, True, only=lambda n: n.startswith(('branches.1xk', 'branches.1x1_avg', 'origin.branches.1x1.')))

    prepare(block)
    merged, separate = plan(block, x)
    assert separate == ['origin', '1x1_avg', '1xk'] and merged == ['1x1_kxk', '1x1', 'kx1', 'residual']
    assert_same(block, x, prepare)


def test_1x1_kxk_runs_apart_when_its_kernel_costs_more(monkeypatch):
    monkeypatch.setattr(fast_block, 'MIN_POSITIONS', 0)
    block = make_block((64, 64, 3, 1, 1, 1, 1))
    small, large = (torch.randn(1, 64, s, s, dtype=torch.float64) for s in (2, 24))
    norm_eval(block)
    assert plan(block, small) == (['origin', '1x1_avg', '1x1', '1xk', 'kx1', 'residual'], ['1x1_kxk'])
    assert plan(block, large)[1] == []
    for x in (small, large):
        assert_same(block, x, norm_eval)


@pytest.mark.parametrize('spec', [
    (3, 8, 7, 2, 3, 1, 1),  # the ResNet stem
    (3, 12, 3, 2, 2, 2, 1),  # dilated
    (4, 16, 5, 2, 2, 1, 2),  # grouped
])
def test_train_mode_1x1_avg_pools_first_exactly(spec):
    """Training-mode BNs (mmpretrain, mmseg's BN): the 1x1-AVG branch of a conv with few input
    channels averages its input first; value, every gradient and BN1's running statistics agree."""
    block = make_block(spec)
    x = torch.randn(2, spec[0], 21, 26, dtype=torch.float64) * 2 + 0.5
    block.train()
    assert fast_block.pool_first_pays(block.branches['1x1_avg'], x)
    fast = assert_same(block, x, lambda b: b.train())
    assert int(fast.branches['1x1_avg'].norm1.num_batches_tracked) == 1
    # BN calibration (momentum None, cumulative average) over two batches, no gradients
    ref, fast = copy.deepcopy(block), copy.deepcopy(block)
    set_fast_forward(ref, False)
    for b in (ref, fast):
        b.branches['1x1_avg'].norm1.reset_running_stats()
        b.branches['1x1_avg'].norm1.momentum = None
    with torch.no_grad():
        for seed in (1, 2):
            xb = torch.randn(3, spec[0], 17, 15, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            assert rel(merged_forward(fast, xb), ref(xb)) <= TOL
    for (name, br), (_, bf) in zip(ref.named_buffers(), fast.named_buffers()):
        assert rel(bf.double(), br.double()) <= TOL, name


def test_pool_first_only_where_it_applies_and_pays():
    x = torch.randn(2, 6, 12, 12, dtype=torch.float64)
    block = make_block(SPECS['residual'])  # C_in = C_out, stride 1: the Gram costs as much as the conv
    block.train()
    assert not fast_block.pool_first_pays(block.branches['1x1_avg'], x)
    stem = make_block(SPECS['stem7x7'])
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    branch = stem.branches['1x1_avg']
    stem.train()
    assert fast_block.pool_first_pays(branch, x)
    assert not fast_block.pool_first_pays(branch, x[:, :, :1, :1])  # one value per channel: BN's own error
    assert not fast_block.pool_first_pays(stem.branches['1x1'], x)
    branch.norm1.eval()  # running statistics: linear, merged instead
    assert not fast_block.pool_first_pays(branch, x)
    branch.norm1.train()
    sync = nn.SyncBatchNorm(branch.norm1.num_features).double()
    branch.norm1 = sync  # statistics over processes: left to the BN itself
    assert not fast_block.pool_first_pays(branch, x)


def test_on_a_gpu_only_the_stem_pools_first():
    """Off the CPU (``meta`` stands for a GPU here: the rule looks at the device type) a 1x1-AVG branch pools
    first only where C_out >= GPU_POOL_FIRST_RATIO x C_in: the 3-channel stem, not a stride-2 block with
    twice its input's channels, which pools first on CPU (fewer multiply-adds)."""
    ratio = fast_block.GPU_POOL_FIRST_RATIO
    stem = make_block((3, 8 * 3, 7, 2, 3, 1, 1)).train()  # C_out = 8 C_in
    down = make_block((4, 8, 3, 2, 1, 1, 1)).train()  # C_out = 2 C_in, stride 2
    assert ratio == 8
    for block, image in ((stem, torch.randn(2, 3, 24, 24)), (down, torch.randn(2, 4, 24, 24))):
        branch, gpu = block.branches['1x1_avg'], copy.deepcopy(block).to('meta').branches['1x1_avg']
        assert fast_block.pool_first_pays(branch, image)
        assert fast_block.pool_first_pays(gpu, image.to('meta')) == (block is stem)
    narrow = make_block((3, 8 * 3 - 1, 7, 2, 3, 1, 1)).train()  # just below the ratio
    assert not fast_block.pool_first_pays(copy.deepcopy(narrow).to('meta').branches['1x1_avg'],
                                          torch.randn(2, 3, 24, 24, device='meta'))


def test_tiny_inputs_run_per_branch():
    block = make_block(SPECS['residual'])
    norm_eval(block)
    x = torch.randn(1, 6, 15, 15, dtype=torch.float64)  # 225 output positions
    assert fast_block.MIN_POSITIONS > 225
    assert plan(block, x) == ([], ['origin', *block.branches])
    assert_same(block, x, norm_eval)


def test_whole_resnet_with_norm_eval():
    """A torchvision ResNet-18 with grown, nested blocks, trained mmdet-style (BNs in eval mode)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).double()
    grow(model, ['conv1', 'layer1.0.conv1', 'layer2.0.conv1', 'layer3.1.conv2', 'layer4.0.conv2'])
    grow(model, ['layer1.0.conv1.branches.1x1_kxk.kxk', 'layer3.1.conv2.origin'])
    randomise_(model, 3)
    fast = copy.deepcopy(model)
    blocks = [b for _, b in iter_blocks(fast)]
    assert set_fast_forward(fast) == len(blocks) == 7
    set_fast_forward(model, False)  # the per-branch reference
    for m in (model, fast):
        m.train()
        set_bn_mode(m, False)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    target = torch.tensor([1, 7])
    for m in (model, fast):
        nn.functional.cross_entropy(m(x), target).backward()
    worst = max(rel(pf.grad, pr.grad) for pr, pf in zip(model.parameters(), fast.parameters()))
    assert worst <= TOL
    with torch.no_grad():
        assert rel(fast.eval()(x), model.eval()(x)) <= TOL
