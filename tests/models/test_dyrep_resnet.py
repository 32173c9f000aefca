"""DyRepResNet inside real mmdet / mmseg / mmpretrain models built from the toolboxes' configs."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.runner import load_checkpoint

from mmdyrep.core import DyRepError, grow, iter_blocks
from mmdyrep.models import STRUCTURE_KEY, deploy_state_dict, switch_to_deploy
from mmdyrep.models.complexity import complexity, count
from .builders import batch, build, features, loss_of, model_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SIZES = {'mmdet': (64, 96), 'mmseg': (64, 64), 'mmpretrain': (64, 64)}
# convs to grow per toolbox: stem, stride-2 and dilated ones (Faster R-CNN freezes its stem)
GROW = {
    'mmdet': ['layer2.0.conv2', 'layer3.0.conv2', 'layer4.2.conv2'],  # stride 2, stride 2, plain
    'mmseg': ['stem.0', 'stem.3', 'layer2.0.conv2', 'layer3.1.conv2', 'layer4.1.conv2'],  # dilation 2 and 4
    'mmpretrain': ['conv1', 'layer2.0.conv2', 'layer4.0.conv2'],  # 7x7 stem, stride 2
}
TOOLBOXES = list(GROW)


def rel_err(a, b):
    return max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a, b))


def evolve(model, toolbox, data, nested=True, names=None):
    """Grow ``names`` (default GROW[toolbox]) with BN calibration on the batch, then one nested grow;
    then give the branches random gammas (the origin absorbs the change, so the eval output stays the same)."""
    names = names or GROW[toolbox]
    inputs = model.data_preprocessor(data, False)['inputs']
    calibrate = lambda backbone: backbone(inputs)  # noqa: E731
    blocks = grow(model.backbone, names, calibrate=calibrate)
    if nested:
        grow(model.backbone, [f'{names[0]}.branches.1x1_kxk.kxk'], calibrate=calibrate)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, block in iter_blocks(model.backbone):
            for branch in block.branches.values():
                old_kernel, old_bias = branch.equivalent_kernel()
                w = branch.last_norm.weight
                w.copy_(torch.rand(w.shape, generator=g) * 0.5)
                new_kernel, new_bias = branch.equivalent_kernel()
                block.absorb_(old_kernel - new_kernel, old_bias - new_bias)
    return blocks


@pytest.mark.parametrize('toolbox', TOOLBOXES)
def test_trains_before_and_after_growth(toolbox):
    model = build(toolbox)
    data = batch(toolbox, size=SIZES[toolbox])
    model.train()
    loss = loss_of(model, data)
    loss.backward()
    assert torch.isfinite(loss)
    model.zero_grad()
    model.eval()
    ref = features(model, data)
    blocks = evolve(model, toolbox, data, nested=False)
    assert rel_err(features(model, data), ref) <= 1e-5  # Rep keeps the eval output
    dilations = {n: b.spec.dilation for n, b in blocks.items()}
    if toolbox == 'mmseg':
        assert dilations['layer3.1.conv2'] == 2 and dilations['layer4.1.conv2'] == 4
    model.train()
    loss = loss_of(model, data)
    loss.backward()
    assert torch.isfinite(loss)
    new = [(n, p) for b in blocks.values() for n, p in b.branches.named_parameters()]
    missing = [n for n, p in new if p.grad is None or p.grad.abs().sum() == 0]
    assert new and not missing, missing


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmpretrain'])
def test_fast_forward_option_matches_the_reference(toolbox):
    """``fast_forward=True``: blocks grown after construction (nested ones too) run merged_forward
    (mmdet: norm_eval, one conv per block; mmpretrain: training-mode BNs, the stem's 1x1-AVG pooled
    first) with the outputs, gradients and BN statistics of the per-branch forward. Compared in
    float64: in float32 the tiny maps and batches here make BN amplify rounding to a few % in
    the gradients of either forward."""
    import copy
    from mmdyrep.core.block import set_fast_forward
    torch.manual_seed(0)
    model = build(toolbox, fast_forward=True)
    evolve(model, toolbox, batch(toolbox, size=SIZES[toolbox]))
    model.train()  # mmdet keeps its BNs in eval mode (norm_eval)
    fast = copy.deepcopy(model.backbone).double()
    ref = copy.deepcopy(fast)
    ref.fast_forward = False
    set_fast_forward(ref, False)
    x = torch.randn(2, 3, *SIZES[toolbox], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    results = []
    for bb in (fast, ref):
        outs = bb(x)
        weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i), dtype=o.dtype)
                   for i, o in enumerate(outs)]
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        results.append((outs, [p.grad if p.grad is not None else torch.zeros_like(p) for p in bb.parameters()]))
    assert all(block.fast_forward for _, block in iter_blocks(fast))
    assert not any(block.fast_forward for _, block in iter_blocks(ref))
    (outs, grads), (ref_outs, ref_grads) = results
    assert rel_err(outs, ref_outs) <= 1e-10
    scale = max(g.abs().max() for g in ref_grads)
    assert max((g - r).abs().max() for g, r in zip(grads, ref_grads)) <= 1e-10 * scale
    for a, b in zip(fast.buffers(), ref.buffers()):  # BN statistics updated alike
        assert torch.allclose(a.double(), b.double(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('toolbox', TOOLBOXES)
def test_unevolved_is_the_stock_resnet(toolbox, tmp_path):
    torch.manual_seed(0)
    model = build(toolbox).eval()
    torch.manual_seed(1)
    stock = build(toolbox, dyrep=False).eval()
    assert type(stock.backbone).__name__ in ('ResNet', 'ResNetV1c')
    assert list(model.state_dict()) == list(stock.state_dict())
    # a stock checkpoint loads strictly, through mmengine's loader, and gives the same outputs
    path = str(tmp_path / 'stock.pth')
    torch.save({'state_dict': stock.backbone.state_dict()}, path)
    load_checkpoint(model.backbone, path, strict=True)
    data = batch(toolbox, size=SIZES[toolbox])
    for a, b in zip(features(model, data), features(stock, data)):
        assert torch.equal(a, b)


def test_candidates_respect_frozen_stages_and_patterns():
    det = build('mmdet')  # frozen_stages=1: stem and layer1 frozen
    names = list(det.backbone.dyrep_candidates())
    assert names and not any(n == 'conv1' or n.startswith('layer1.') for n in names)
    assert all(n.endswith('conv2') for n in names)  # a Bottleneck's only 3x3
    seg = build('mmseg', grow_candidates=['stem.*', 'layer4.*'])
    names = list(seg.backbone.dyrep_candidates())
    assert names[:3] == ['stem.0', 'stem.3', 'stem.6'] and names[3:] == ['layer4.0.conv2', 'layer4.1.conv2',
                                                                         'layer4.2.conv2']
    with pytest.raises(DyRepError, match='grow_candidates must be a list'):
        build('mmseg', grow_candidates='layer4.*')


def test_new_norms_follow_norm_cfg_and_norm_eval():
    model = build('mmdet')  # norm_eval=True
    grow(model.backbone, ['layer2.0.conv2'])
    model.train()
    block = model.backbone.layer2[0].conv2
    assert all(not m.training for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d))
    sync = build('mmseg', norm_cfg=dict(type='SyncBN', requires_grad=True))
    grow(sync.backbone, ['layer4.0.conv2'])
    assert isinstance(sync.backbone.layer4[0].conv2.branches['1x1'].norm, torch.nn.SyncBatchNorm)


FRESH_PROCESS = r'''
import json, sys, torch
spec = json.load(open(sys.argv[1]))
out = {}
for toolbox, item in spec.items():
    if toolbox == 'mmdet':
        from mmdet.apis import init_detector as init
    elif toolbox == 'mmseg':
        from mmseg.apis import init_model as init
    else:
        from mmpretrain.apis import init_model as init
    model = init(item['config'], item['checkpoint'], device='cpu')
    model.eval()
    inputs = torch.load(item['inputs'])
    with torch.no_grad():
        feats = model.backbone(inputs)
    torch.save(list(feats), item['output'])
    out[toolbox] = sum(1 for m in model.backbone.modules() if type(m).__name__ == 'DyRepBlock')
print(json.dumps(out))
'''


def test_evolved_checkpoint_loads_through_every_api_in_a_fresh_process(tmp_path):
    spec, refs, blocks = {}, {}, {}
    for toolbox in TOOLBOXES:
        cfg = model_config(toolbox)
        cfg.custom_imports = dict(imports=[f'mmdyrep.models.{toolbox}_resnet'], allow_failed_imports=False)
        model = build(toolbox).eval()
        data = batch(toolbox, size=SIZES[toolbox])
        evolve(model, toolbox, data)
        blocks[toolbox] = sum(1 for _ in iter_blocks(model.backbone))
        inputs = model.data_preprocessor(data, False)['inputs']
        refs[toolbox] = features(model, data)
        item = {k: str(tmp_path / f'{toolbox}_{k}') for k in ('config', 'checkpoint', 'inputs', 'output')}
        item['config'] += '.py'
        cfg.dump(item['config'])
        torch.save({'state_dict': model.state_dict(), 'meta': {}}, item['checkpoint'])
        torch.save(inputs, item['inputs'])
        spec[toolbox] = item
        # the same checkpoint, in process, through mmengine's loader into a freshly built model
        fresh = build(toolbox).eval()
        load_checkpoint(fresh, item['checkpoint'], strict=True)
        assert rel_err(features(fresh, data), refs[toolbox]) == 0
    (tmp_path / 'spec.json').write_text(json.dumps(spec))
    script = tmp_path / 'load.py'
    script.write_text(FRESH_PROCESS)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / 'spec.json')], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts == blocks
    for toolbox in TOOLBOXES:
        got = torch.load(spec[toolbox]['output'])
        assert rel_err(got, refs[toolbox]) == 0, toolbox


@pytest.mark.parametrize('toolbox', TOOLBOXES)
def test_deploy_gives_a_stock_resnet(toolbox):
    model = build(toolbox).eval()
    data = batch(toolbox, size=SIZES[toolbox])
    evolve(model, toolbox, data)
    ref = features(model, data)
    evolved = model.state_dict()
    assert STRUCTURE_KEY in [k.split('.')[-1] for k in evolved]
    plain = deploy_state_dict(model, evolved)
    stock = build(toolbox, dyrep=False).eval()
    result = stock.load_state_dict(plain, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert rel_err(features(stock, data), ref) <= 1e-5
    assert list(iter_blocks(model.backbone))  # deploy_state_dict left the model as it was
    fused = switch_to_deploy(model)
    assert len(fused) == len(GROW[toolbox])
    assert list(model.state_dict()) == list(stock.state_dict())
    assert rel_err(features(model, data), ref) <= 1e-5


# every toolbox's deep-stem variant: its stem convs (mmpretrain builds them as ConvModules, conv -> bn)
DEEP_STEM = {
    'mmdet': ('ResNetV1d', ['stem.0', 'stem.3', 'stem.6']),
    'mmseg': ('ResNetV1c', ['stem.0', 'stem.3', 'stem.6']),
    'mmpretrain': ('ResNetV1d', ['stem.0.conv', 'stem.1.conv', 'stem.2.conv']),
}


@pytest.mark.parametrize('toolbox', TOOLBOXES)
def test_deep_stem_variants_deploy_with_the_stem_grown(toolbox):
    kind, stem = DEEP_STEM[toolbox]
    model = build(toolbox, type='DyRep' + kind).eval()
    data = batch(toolbox, size=SIZES[toolbox])
    evolve(model, toolbox, data, names=stem)  # the biases the origins got must fold into the stem's BNs
    ref = features(model, data)
    stock = build(toolbox, dyrep=False, type=kind).eval()
    result = stock.load_state_dict(deploy_state_dict(model, model.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert rel_err(features(stock, data), ref) <= 1e-5


@pytest.mark.parametrize('mode, branches', [('repvgg', {'1x1', 'residual'}), ('dbb', {'1x1_kxk', '1x1_avg', '1x1'})])
def test_static_baselines(mode, branches, tmp_path):
    model = build('mmpretrain', depth=18, rep_mode=mode).eval()
    blocks = dict(iter_blocks(model.backbone))
    assert set(blocks) == set(build('mmpretrain', depth=18).backbone.dyrep_candidates())
    assert set(blocks['layer1.0.conv1'].branches) == branches
    assert 'residual' not in blocks['layer2.0.conv1'].branches  # stride 2
    # plain ResNet weights in: the branches are grown around them and the output is kept
    stock = build('mmpretrain', depth=18, dyrep=False).eval()
    path = str(tmp_path / 'r18.pth')
    torch.save(stock.backbone.state_dict(), path)
    load_checkpoint(model.backbone, path, strict=True)
    assert len(list(iter_blocks(model.backbone))) == len(blocks)
    data = batch('mmpretrain', size=(64, 64))
    ref = features(stock, data)
    assert rel_err(features(model, data), ref) <= 1e-5
    # and deployed back to the stock ResNet-18
    stock.load_state_dict(deploy_state_dict(model, model.state_dict()), strict=True)
    assert rel_err(features(stock, data), ref) <= 1e-5


def test_pretrained_names_resolve_to_local_files(tmp_path, monkeypatch):
    """init_cfg 'torchvision://' and mmseg's model-level 'pretrained' ('open-mmlab://') load local files."""
    from mmengine.runner.checkpoint import get_external_models, get_torchvision_models
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    hub = tmp_path / 'hub' / 'checkpoints'
    hub.mkdir(parents=True)
    # mmdet: backbone init_cfg=Pretrained torchvision://resnet18
    stock = build('mmpretrain', depth=18, dyrep=False).backbone
    torch.save(stock.state_dict(), hub / osp.basename(get_torchvision_models()['resnet18']))
    det = build('mmdet', depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18'))
    assert torch.equal(det.backbone.layer3[1].conv2.weight, stock.layer3[1].conv2.weight)
    # mmseg: EncoderDecoder(pretrained='open-mmlab://resnet18_v1c') passes it down to the backbone
    from mmseg.registry import MODELS
    import mmdyrep.models.mmseg_resnet  # noqa: F401
    v1c = build('mmseg', dyrep=False, depth=18).backbone
    torch.save(v1c.state_dict(), hub / osp.basename(get_external_models()['resnet18_v1c']))
    from mmengine.config import ConfigDict
    seg = MODELS.build(
        ConfigDict(type='EncoderDecoder', pretrained='open-mmlab://resnet18_v1c',
             backbone=dict(type='DyRepResNetV1c', depth=18),
             decode_head=dict(type='FCNHead', in_channels=512, channels=16, num_classes=19)))
    seg.init_weights()
    assert torch.equal(seg.backbone.stem[3].weight, v1c.stem[3].weight)


def test_bad_input_is_named(tmp_path):
    with pytest.raises(DyRepError, match=r'unknown depth 20; mmpretrain ResNet supports \[18, 34, 50, 101, 152'):
        build('mmpretrain', depth=20)
    with pytest.raises(DyRepError, match="unknown rep_mode 'dbbb'"):
        build('mmpretrain', rep_mode='dbbb')
    r50 = build('mmpretrain').eval()
    grow(r50.backbone, ['layer2.0.conv2'])
    path = str(tmp_path / 'r50.pth')
    torch.save({'state_dict': r50.state_dict()}, path)
    r18 = build('mmpretrain', depth=18)
    before = {k: v.clone() for k, v in r18.state_dict().items()}
    with pytest.raises(DyRepError, match=r"DyRep structure does not fit this DyRepResNet \(depth 18\): "
                       r"layer2.0.conv2: the structure was made for a conv with spec \[128, 128, 3, 2"):
        load_checkpoint(r18, path, strict=True)
    assert not list(iter_blocks(r18)) and all(torch.equal(v, before[k]) for k, v in r18.state_dict().items())
    # a corrupt structure entry
    state = r50.state_dict()
    state['backbone.' + STRUCTURE_KEY] = torch.tensor([123, 34, 98, 255], dtype=torch.uint8)
    with pytest.raises(DyRepError, match='not a valid DyRep structure .* may be corrupt'):
        build('mmpretrain').load_state_dict(state)


def test_params_and_flops():
    """Plain ResNet-18/50 classifiers at 224x224: the published 1.81 / 4.09 GMACs, 11.7 / 25.6 M params."""
    from mmpretrain.registry import MODELS
    for depth, gflops, mparams in ((18, 1.81, 11.7), (50, 4.09, 25.6)):
        model = build('mmpretrain', depth=depth)
        if depth == 18:
            model.head = MODELS.build(dict(type='LinearClsHead', num_classes=1000, in_channels=512))
        c = count(model)
        assert round(c['flops'] / 1e9, 2) == gflops, depth
        assert round(c['params'] / 1e6, 1) == mparams, depth
    # an evolved backbone: training-time counts grow, the deployed ones are the plain ones
    plain = count(model.backbone)
    grow(model.backbone, ['layer1.0.conv2', 'layer3.1.conv2'])
    c = complexity(model.backbone)
    assert c['params'] > plain['params']
    # conv MACs of the six branches of a 3x3 C->C conv at stride 1 (1x1-K×K: 1 + 9, 1x1-AVG: its 1x1
    # only, pooling is not counted on any device, 1x1: 1, 1xK and Kx1: 3 each) = 18 C² per position
    assert c['flops'] - plain['flops'] == 18 * (64 * 64 * 56 * 56 + 256 * 256 * 14 * 14)
    assert c['deployed_params'] == plain['params'] and c['deployed_flops'] == plain['flops']
