"""Grow (Rep, Eq. 5-8), cut (Dep, Eq. 9-10) and deploy keep a whole model's eval output."""
import copy
import random

import pytest
import torch
from torch import nn

from mmdyrep.core import (DyRepBlock, DyRepError, UnsupportedConvError, cut, cut_branches, dep_decision, deploy,
                          extract_structure, grow, growable_convs, iter_blocks)
from .conftest import rel_err

BOUND = 1e-5  # float32, relative to the output's max magnitude


def calibrator(batches):
    return lambda model: [model(b) for b in batches]


def test_growable_convs_of_resnet18(resnet18):
    names = list(growable_convs(resnet18))
    assert names[0] == 'conv1'  # the 7x7 stem
    assert len(names) == 17  # stem + 16 3x3 convs; 1x1 downsample convs excluded
    assert not any('downsample' in n for n in names)


def test_grow_keeps_eval_output(resnet18, batches, image):
    ref = resnet18(image)
    names = ['conv1', 'layer2.0.conv1', 'layer4.0.conv2', 'layer4.1.conv1']  # 7x7, stride 2, dilation 2, 4
    blocks = grow(resnet18, names, calibrate=calibrator(batches))
    assert set(blocks) == set(names)
    assert 'residual' not in blocks['layer2.0.conv1'].branches  # stride 2
    assert set(blocks['layer4.1.conv1'].branches) == {'1x1_kxk', '1x1_avg', '1x1', '1xk', 'kx1', 'residual'}
    assert rel_err(resnet18(image), ref) <= BOUND
    # the origin keeps its weight parameter object (optimizer state survives) and gains a bias
    assert isinstance(resnet18.conv1, DyRepBlock) and resnet18.conv1.origin.bias is not None


def test_gamma_init_and_calibration(resnet18, batches):
    before = {n: b.running_mean.clone() for n, b in resnet18.named_modules() if isinstance(b, nn.BatchNorm2d)}
    seen = []
    resnet18.layer1.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    (block, ) = grow(resnet18, ['layer2.1.conv1'], gamma_init=0.03, calibrate=calibrator(batches)).values()
    for branch in block.branches.values():
        assert torch.all(branch.last_norm.weight == 0.03) and torch.all(branch.last_norm.bias == 0)
        assert branch.last_norm.momentum == 0.1  # restored after calibration
    # the residual BN sees the block input: its statistics are those of the calibration batches
    # (cumulative average over equally sized batches == mean of the batch means)
    hooked = []
    resnet18.layer2[0].register_forward_hook(lambda m, i, o: hooked.append(o))
    resnet18.eval()
    with torch.no_grad():
        for b in batches:
            resnet18(b)
    expected_mean = torch.stack([h.mean(dim=(0, 2, 3)) for h in hooked]).mean(0)
    assert torch.allclose(block.branches['residual'].norm.running_mean, expected_mean, atol=1e-5)
    assert not torch.all(block.branches['residual'].norm.running_var == 1)
    # calibration changed no other BN and restored modes
    for n, b in resnet18.named_modules():
        if n in before:
            assert torch.equal(b.running_mean, before[n]), n
    assert not resnet18.training and not any(m.training for m in resnet18.modules())


def test_train_step_reaches_every_new_parameter(resnet18, batches):
    blocks = grow(resnet18, ['conv1', 'layer3.0.conv2'], calibrate=calibrator(batches))
    resnet18.train()
    loss = resnet18(batches[0]).logsumexp(1).mean()
    loss.backward()
    new_params = [p for b in blocks.values() for p in b.branches.parameters()]
    new_params += [b.origin.bias for b in blocks.values()]
    assert len(new_params) > 20
    for p in new_params:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_nested_grow_three_levels(resnet18, batches, image):
    ref = resnet18(image)
    grow(resnet18, ['layer1.0.conv1'], calibrate=calibrator(batches))
    # recurse through the K×K of the 1x1-KxK branch
    name = 'layer1.0.conv1'
    for _ in range(3):
        name = f'{name}.branches.1x1_kxk.kxk'
        assert name in growable_convs(resnet18)
        grow(resnet18, [name], calibrate=calibrator(batches))
    # and through the origin
    grow(resnet18, ['layer1.0.conv1.origin'], calibrate=calibrator(batches))
    grow(resnet18, ['layer1.0.conv1.origin.origin'], calibrate=calibrator(batches))
    depth = max(n.count('branches.1x1_kxk.kxk') for n, _ in iter_blocks(resnet18))
    assert depth == 3
    assert isinstance(resnet18.layer1[0].conv1.origin.origin, DyRepBlock)
    assert rel_err(resnet18(image), ref) <= BOUND
    # a training-mode step still runs through the nested blocks
    resnet18.train()
    resnet18(image).sum().backward()
    assert resnet18.layer1[0].conv1.origin.origin.origin.weight.grad is not None


def set_importances(block, values):
    for name, value in values.items():
        block.branches[name].last_norm.weight.data.fill_(value)


def test_dep_decision_rule():
    assert dep_decision({'a': 0.01, 'b': 0.011}) == []  # spread below lambda
    assert dep_decision({'a': 0.01, 'b': 0.2, 'c': 0.15}) == ['a']
    assert dep_decision({'a': 0.3}) == []
    # population std: values 0 and 0.04 -> std 0.02 is not > 0.02
    assert dep_decision({'a': 0.0, 'b': 0.04}, 0.02) == []
    assert dep_decision({'a': 0.0, 'b': 0.0401}, 0.02) == ['a']


def test_cut_keeps_eval_output(resnet18, batches, image):
    blocks = grow(resnet18, ['layer1.1.conv2', 'layer3.1.conv1'], calibrate=calibrator(batches))
    set_importances(blocks['layer1.1.conv2'], {'1x1_kxk': 0.3, '1x1_avg': 0.01, '1x1': 0.25, '1xk': 0.02,
                                               'kx1': 0.2, 'residual': 0.3})
    set_importances(blocks['layer3.1.conv1'], {b: 0.05 for b in blocks['layer3.1.conv1'].branches})
    ref = resnet18(image)
    done = cut(resnet18, threshold=0.02)
    assert done == {'layer1.1.conv2': ['1x1_avg', '1xk']}
    assert set(resnet18.layer1[1].conv2.branches) == {'1x1_kxk', '1x1', 'kx1', 'residual'}
    assert len(resnet18.layer3[1].conv1.branches) == 6
    assert rel_err(resnet18(image), ref) <= BOUND
    cut_branches(resnet18, 'layer3.1.conv1', ['1x1', 'residual'])
    assert rel_err(resnet18(image), ref) <= BOUND
    assert '1x1' not in resnet18.layer3[1].conv1.branches


def test_deploy_after_random_grows_and_cuts(resnet18, batches, image):
    rng = random.Random(0)
    original_shapes = {n: m.weight.shape for n, m in resnet18.named_modules() if isinstance(m, nn.Conv2d)}
    for step in range(8):
        names = rng.sample(sorted(growable_convs(resnet18)), 2)
        grow(resnet18, names, calibrate=calibrator(batches[:2]))
        for _, block in iter_blocks(resnet18):
            for branch in block.branches.values():
                branch.last_norm.weight.data.uniform_(0, rng.choice([0.02, 0.2]))
        cut(resnet18, threshold=0.02)
    assert len(list(iter_blocks(resnet18))) >= 8
    ref = resnet18(image)
    replaced = deploy(resnet18)
    assert replaced and not list(iter_blocks(resnet18))
    assert {n: m.weight.shape for n, m in resnet18.named_modules() if isinstance(m, nn.Conv2d)} == original_shapes
    assert rel_err(resnet18(image), ref) <= BOUND


def test_float64_grow_cut_deploy_exact(image, batches):
    from .conftest import make_resnet18
    model = make_resnet18().double()
    x = image.double()
    ref = model(x)
    blocks = grow(model, ['conv1', 'layer2.0.conv2', 'layer4.1.conv1'],
                  calibrate=calibrator([b.double() for b in batches]))
    grow(model, ['conv1.branches.1x1_kxk.kxk'])
    assert rel_err(model(x), ref) <= 1e-12
    set_importances(blocks['conv1'], {'1x1_kxk': 0.3, '1x1_avg': 0.01, '1x1': 0.25, '1xk': 0.02, 'kx1': 0.2})
    ref = model(x)
    cut(model)
    assert rel_err(model(x), ref) <= 1e-12
    deploy(model)
    assert rel_err(model(x), ref) <= 1e-12


# --------------------------------------------------------------------------- bad input
def snapshot(model):
    return copy.deepcopy(model.state_dict()), extract_structure(model), [type(m) for m in model.modules()]


def assert_untouched(model, snap):
    state, structure, types = snap
    assert extract_structure(model) == structure
    assert [type(m) for m in model.modules()] == types
    new_state = model.state_dict()
    assert new_state.keys() == state.keys()
    assert all(torch.equal(new_state[k], v) for k, v in state.items())


@pytest.mark.parametrize('names, error, match', [
    (['layer1.0.conv9'], DyRepError, "no module named 'layer1.0.conv9'"),
    (['layer1.0.bn1'], UnsupportedConvError, 'layer1.0.bn1: expected an nn.Conv2d'),
    (['layer2.0.downsample.0'], UnsupportedConvError, r'layer2.0.downsample.0: a 1x1 conv'),
    (['conv1', 'conv1'], DyRepError, 'duplicate'),
    (['conv1', 'nope'], DyRepError, "no module named 'nope'"),  # nothing grows, not even conv1
])
def test_grow_bad_input_leaves_model_untouched(resnet18, names, error, match):
    snap = snapshot(resnet18)
    with pytest.raises(error, match=match):
        grow(resnet18, names)
    assert_untouched(resnet18, snap)


def test_grow_bad_branches_and_regrow(resnet18):
    grow(resnet18, ['layer1.0.conv1'])
    snap = snapshot(resnet18)
    with pytest.raises(UnsupportedConvError, match=r'layer2.0.conv1: residual needs .* stride 1'):
        grow(resnet18, ['layer2.0.conv1'], branches=['1x1', 'residual'])
    with pytest.raises(DyRepError, match=r"unknown branch types \['3x3'\]"):
        grow(resnet18, ['layer2.0.conv2'], branches=['3x3'])
    with pytest.raises(DyRepError, match=r"already a DyRep block; grow its origin 'layer1.0.conv1.origin'"):
        grow(resnet18, ['layer1.0.conv1'])
    assert_untouched(resnet18, snap)


def test_cut_bad_input_leaves_model_untouched(resnet18):
    grow(resnet18, ['layer1.0.conv1'], branches=['1x1', '1xk'])
    snap = snapshot(resnet18)
    with pytest.raises(DyRepError, match=r"cannot cut \['residual'\]: the block has branches \['1x1', '1xk'\]"):
        cut_branches(resnet18, 'layer1.0.conv1', ['1x1', 'residual'])
    with pytest.raises(DyRepError, match="'layer1.0.conv2' is not a DyRep block"):
        cut_branches(resnet18, 'layer1.0.conv2', ['1x1'])
    with pytest.raises(DyRepError, match="no module named 'layer9'"):
        cut(resnet18, names=['layer9'])
    assert_untouched(resnet18, snap)
