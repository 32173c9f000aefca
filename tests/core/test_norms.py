"""following_norms: which BN normalises which conv, found by a hooked forward (no attribute names)."""
import pytest
import torch
from torch import nn

from mmdyrep.core import Evolver, candidate_kind, following_norms, grow
from mmdyrep.core.block import DyRepBlock
from mmdyrep.core.norms import uses_batch_stats


class Unit(nn.Module):
    """conv -> norm under names no rule could guess, and a conv whose output no BN reads."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.omega = nn.BatchNorm2d(4)
        self.lonely = nn.Conv2d(4, 4, 3, padding=1)
        self.tail = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU(), nn.BatchNorm2d(4))

    def forward(self, x):
        x = self.lonely(torch.relu(self.omega(self.alpha(x))))
        return self.tail(x)


def test_names_play_no_part(resnet18):
    found = following_norms(Unit())
    assert found == {'alpha': 'omega', 'lonely': None, 'tail.0': None}  # a ReLU between: not normalised
    resnet = following_norms(resnet18)
    assert resnet['conv1'] == 'bn1' and resnet['layer3.1.conv2'] == 'layer3.1.bn2'
    assert resnet['layer2.0.downsample.0'] == 'layer2.0.downsample.1'
    assert len([n for n, m in resnet18.named_modules() if isinstance(m, nn.Conv2d)]) == len(resnet)


def test_grown_blocks_origins_and_inner_kxk(resnet18):
    grow(resnet18, ['layer1.0.conv1'])
    grow(resnet18, ['layer1.0.conv1.origin', 'layer1.0.conv1.branches.1x1_kxk.kxk'])
    for block in resnet18.modules():
        if isinstance(block, DyRepBlock):
            block.fast_forward = True  # ignored while tracing: every conv is still seen
    found = following_norms(resnet18)
    assert found['layer1.0.conv1'] == 'layer1.0.bn1'  # the outer block's output
    assert found['layer1.0.conv1.origin'] == 'layer1.0.bn1'  # a nested block: one summand
    assert found['layer1.0.conv1.origin.origin'] == 'layer1.0.bn1'  # two levels down
    assert found['layer1.0.conv1.origin.branches.1x1.conv'] == 'layer1.0.conv1.origin.branches.1x1.norm'
    inner = 'layer1.0.conv1.branches.1x1_kxk.kxk'
    assert found[inner] == 'layer1.0.conv1.branches.1x1_kxk.norm'
    assert found[inner + '.origin'] == 'layer1.0.conv1.branches.1x1_kxk.norm'
    assert candidate_kind(resnet18, 'layer1.0.conv1.origin.origin') == 'origin'
    assert candidate_kind(resnet18, inner + '.origin') == 'origin'
    assert candidate_kind(resnet18, 'layer1.0.conv1.origin.branches.1x1_kxk.kxk') == 'inner'
    assert candidate_kind(resnet18, 'layer2.0.conv1') == 'plain'


def test_trace_leaves_the_model_as_it_was(resnet18):
    resnet18.train()
    resnet18.layer1.eval()
    before = {k: v.clone() for k, v in resnet18.state_dict().items()}
    following_norms(resnet18, torch.randn(2, 3, 32, 32))
    assert resnet18.training and not resnet18.layer1.training and resnet18.layer2.training
    for k, v in resnet18.state_dict().items():
        assert torch.equal(v, before[k]), k  # eval mode: no running-statistics update


def test_evolver_ops_follow_the_norm_mode(resnet18):
    grow(resnet18, ['layer1.0.conv2'])
    evolver = Evolver(resnet18)
    resnet18.train()
    ops = evolver.ops()
    plain, origin = ops['layer2.0.conv1'], ops['layer1.0.conv2.origin']
    bn = resnet18.layer2[0].bn1
    assert [p for p, _ in plain.norm] == [bn.weight, bn.bias] and plain.invariant
    assert [p for p, _ in origin.conv] == [resnet18.layer1[0].conv2.origin.weight,
                                          resnet18.layer1[0].conv2.origin.bias]
    assert not origin.invariant  # one summand of the block: not scale-invariant on its own
    assert evolver.kinds()['layer1.0.conv2.origin'] == 'origin'
    assert evolver.norm_modes()['layer2.0.conv1'] == 'batch-statistics'
    resnet18.eval()  # running statistics (mmdet's norm_eval=True): the conv's terms are real
    assert not evolver.ops()['layer2.0.conv1'].invariant
    assert evolver.norm_modes()['layer2.0.conv1'] == 'running-statistics'
    assert uses_batch_stats(nn.BatchNorm2d(3, track_running_stats=False).eval())


def test_no_conv_is_a_clear_error():
    with pytest.raises(ValueError, match='no Conv2d'):
        following_norms(nn.Linear(3, 3))
