"""DyRepHook in real mmengine Runners (mmpretrain, mmdet, mmseg) on small synthetic data."""
import glob
import json
import os.path as osp
import shutil
import warnings

import pytest
import torch
from mmengine.runner import Runner

import mmdyrep.engine  # noqa: F401  (registers the hook, allow-lists checkpoint classes)
from mmdyrep.core import DyRepError, cut_branches, extract_structure, iter_blocks
from mmdyrep.engine import sync_optimizer
from mmdyrep.models.complexity import count
from .runners import cityscapes_cfg, coco_cfg, imagenet_cfg


def history(work_dir):
    with open(osp.join(work_dir, 'dyrep_history.json')) as f:
        return json.load(f)


def log_text(work_dir):
    logs = glob.glob(osp.join(work_dir, '*', '*.log'))
    return open(sorted(logs)[-1]).read()


def check_run(runner, min_updates):
    """≥ min_updates updates; the logged structure / params match the model; Rep/Dep kept the eval
    output (measured in the run); the loss stayed finite."""
    backbone = runner.model.backbone
    h = history(runner.work_dir)
    records = h['records']
    updates = [r for r in records if r['grown']]
    assert len(updates) >= min_updates
    assert records[-1]['structure'] == extract_structure(backbone)
    assert records[-1]['params'] == sum(p.numel() for p in backbone.parameters())
    assert records[-1]['flops'] == count(backbone, h['input_shape'])['flops']
    params = [r['params'] for r in records]
    assert params == sorted(params) and params[-1] > params[0]  # grew as logged (no cut here)
    assert all(r['eval_change'] <= 1e-5 for r in updates)
    assert records[0]['deployed_params'] == records[0]['params'] == records[-1]['deployed_params']
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss))
    text = log_text(runner.work_dir)
    assert text.count('[DyRep] update') == 2 * len(updates)  # the top-5 line and the grow line
    for name in updates[0]['grown']:
        assert f'grew {name} <-' in text
    # each update keeps the full score table it chose from: the grown conv is its top-1
    for r in updates:
        sal = r['saliency']
        scores = sal['scores'][sal['metric']]
        assert set(scores) == set(sal['kinds']) == set(sal['norm_modes'])
        assert list(r['grown']) == [min(scores, key=lambda n: (-scores[n], n))]
        assert set(sal['kinds'].values()) <= {'plain', 'origin', 'inner'}
    assert text.count('top-5 by') == len(updates)
    return text


def test_classification_run(tmp_path):
    runner = Runner.from_cfg(imagenet_cfg(str(tmp_path / 'data'), str(tmp_path / 'work'), epochs=3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        runner.train()
    # the hook scores through a public optimizer step pre-hook: mmengine's scheduler finds its own
    # wrapped step untouched and has nothing to warn about; the pre-hook is gone after the run
    assert not [w for w in caught if 'has been overridden' in str(w.message)]
    optimizer = runner.optim_wrapper.optimizer
    assert not optimizer._optimizer_step_pre_hooks
    assert hasattr(runner.optim_wrapper.step, '_with_counter')
    text = check_run(runner, 3)
    assert 'numerically degenerate' not in text  # synflow over the OP-BN operation, train-mode BN
    # each update's grown op is a block now, and its new parameters are optimized
    opt_params = {id(p) for g in runner.optim_wrapper.optimizer.param_groups for p in g['params']}
    for _, block in iter_blocks(runner.model.backbone):
        assert all(id(p) in opt_params for p in block.branches.parameters())
    # load_from an evolved checkpoint (fine-tuning, stage C+D style): the structure comes with the
    # weights, before_train gives its parameters to the new optimizer, and it evolves further
    grown = history(runner.work_dir)['records'][-1]['structure']
    again = Runner.from_cfg(imagenet_cfg(str(tmp_path / 'data'), str(tmp_path / 'again'), epochs=1,
                                         load_from=str(tmp_path / 'work' / 'epoch_3.pth')))
    again.train()
    blocks = dict(iter_blocks(again.model.backbone))
    assert set(grown['blocks']) <= set(blocks)
    opt_params = {id(p) for g in again.optim_wrapper.optimizer.param_groups for p in g['params']}
    assert all(id(p) in opt_params for b in blocks.values() for p in b.parameters())
    assert len(history(str(tmp_path / 'again'))['records']) == 2


def test_degenerate_metric_is_named_once(tmp_path):
    """synflow_conv (the conv weight only, as the authors' code) under training-mode BN: one warning."""
    runner = Runner.from_cfg(imagenet_cfg(str(tmp_path / 'data'), str(tmp_path / 'work'), epochs=2,
                                          hook=dict(metric='synflow_conv')))
    # also: the in-run equivalence check measures in full float32, TF32 off, settings restored after
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    seen = []
    runner.model.backbone.register_forward_pre_hook(lambda m, args: seen.append(
        (m.training, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)))
    try:
        runner.train()
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    updates = [r for r in history(runner.work_dir)['records'] if r['grown']]
    assert seen.count((False, False, False)) == 2 * len(updates) > 0  # before and after each update
    assert (True, True, True) in seen  # training itself is left as the user set it
    text = log_text(runner.work_dir)
    assert text.count('numerically degenerate') == 1
    line = next(line for line in text.splitlines() if 'numerically degenerate' in line)
    assert "metric 'synflow_conv'" in line and 'batch-statistics' in line and "metric='synflow'" in line
    ratios = history(runner.work_dir)['records'][1]['saliency']['degeneracy']
    assert sorted(ratios.values())[len(ratios) // 2] < 1e-4


def test_detection_run(tmp_path):
    runner = Runner.from_cfg(coco_cfg(str(tmp_path / 'data'), str(tmp_path / 'work'), epochs=2))
    runner.train()
    check_run(runner, 2)
    # Faster R-CNN freezes the stem and layer1: they never grow
    assert not any(n.startswith(('conv1', 'layer1')) for n, _ in iter_blocks(runner.model.backbone))


def test_segmentation_run_by_iterations(tmp_path):
    runner = Runner.from_cfg(cityscapes_cfg(str(tmp_path / 'data'), str(tmp_path / 'work'), iters=4))
    runner.train()
    check_run(runner, 2)
    assert [r['iter'] for r in history(runner.work_dir)['records']] == [0, 2, 4]
    assert history(runner.work_dir)['by_epoch'] is False


def deterministic(cfg):
    cfg.train_dataloader.dataset.pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    return cfg


def test_resume_continues_as_if_never_interrupted(tmp_path):
    data = str(tmp_path / 'data')
    full = Runner.from_cfg(deterministic(imagenet_cfg(data, str(tmp_path / 'full'), epochs=4, hook=dict(interval=2))))
    full.train()
    reference = history(str(tmp_path / 'full'))['records']
    final = torch.load(str(tmp_path / 'full' / 'epoch_4.pth'), weights_only=True)['state_dict']
    # epoch 1 and 3: mid-interval (scores accumulated since the last update are in the checkpoint);
    # epoch 2: right after an update
    for epoch in (1, 2, 3):
        work = str(tmp_path / f'resume{epoch}')
        shutil.copytree(str(tmp_path / 'full'), work)
        cfg = deterministic(imagenet_cfg(data, work, epochs=4, hook=dict(interval=2), resume=True,
                                         load_from=osp.join(work, f'epoch_{epoch}.pth')))
        Runner.from_cfg(cfg).train()
        records = history(work)['records']
        assert [(r['iter'], r['grown'], r['cut']) for r in records] == \
            [(r['iter'], r['grown'], r['cut']) for r in reference]
        resumed = torch.load(osp.join(work, 'epoch_4.pth'), weights_only=True)['state_dict']
        assert resumed.keys() == final.keys()
        # same data order, same decisions, same new-branch initialisation: the same weights
        # (stated tolerance: 1e-5 absolute on every tensor)
        worst = max((resumed[k].float() - final[k].float()).abs().max().item() for k in final)
        assert worst <= 1e-5, (epoch, worst)


# a custom key on the new 1x1 branches: lr x0.1 (and decay x1, which wins over norm/bias decay 0)
PARAMWISE = dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={'branches.1x1.': dict(lr_mult=0.1)})


@pytest.mark.parametrize('optimizer', [
    dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    dict(type='AdamW', lr=0.001, weight_decay=0.05),
])
def test_optimizer_groups_follow_paramwise_cfg(tmp_path, optimizer):
    cfg = imagenet_cfg(str(tmp_path / 'data'), str(tmp_path / 'work'), epochs=2,
                       hook=dict(interval=1, end=1),
                       optim=dict(optimizer=optimizer, paramwise_cfg=PARAMWISE))
    cfg.param_scheduler = [dict(type='MultiStepLR', milestones=[1], gamma=0.5, by_epoch=True)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    opt = runner.optim_wrapper.optimizer
    group_of = {id(p): g for g in opt.param_groups for p in g['params']}
    # what mmengine's own constructor gives these parameters on the evolved model
    from mmengine.optim import build_optim_wrapper
    reference = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    ref_of = {id(p): g for g in reference.param_groups for p in g['params']}
    (name, block), = [(n, b) for n, b in iter_blocks(model.backbone)]
    factor = 0.5  # the MultiStepLR milestone passed after the update
    seen = set()
    for pname, p in block.named_parameters():
        if pname == 'origin.weight':
            continue  # an old parameter
        g, ref = group_of[id(p)], ref_of[id(p)]
        assert g['weight_decay'] == pytest.approx(ref['weight_decay']), pname
        assert g['initial_lr'] == pytest.approx(ref['lr']), pname
        assert g['lr'] == pytest.approx(ref['lr'] * factor), pname
        seen.add((g['initial_lr'], g['weight_decay']))
        # the rules by hand
        custom = pname.startswith('branches.1x1.')
        assert g['initial_lr'] == pytest.approx(optimizer['lr'] * (0.1 if custom else 1.0)), pname
        no_decay = not custom and ('norm' in pname or pname.endswith('bias'))
        assert g['weight_decay'] == pytest.approx(0.0 if no_decay else optimizer['weight_decay']), pname
    assert len(seen) == 3  # (lr, wd), (lr, 0), (0.1 lr, wd)
    # the scheduler knows every group (plus mmengine's trailing base-lr pseudo group)
    scheduler = runner.param_schedulers[0]
    groups = runner.optim_wrapper.param_groups
    assert len(scheduler.base_values) == len(groups)
    assert all(v == pytest.approx(g['initial_lr']) for v, g in zip(scheduler.base_values, groups[:-1]))
    # new parameters got optimizer state; cutting removes parameters and their state
    branch_params = list(block.branches['1x1'].parameters())
    assert all(p in opt.state for p in branch_params)
    cut_branches(model.backbone, name, ['1x1'])
    added, removed = sync_optimizer(opt, model, cfg.optim_wrapper)
    assert added == [] and removed == len(branch_params)
    held = {id(p) for g in opt.param_groups for p in g['params']}
    assert not any(id(p) in held or p in opt.state for p in branch_params)


def test_scores_are_unscaled_under_amp_and_non_finite_steps_skipped(tmp_path):
    """mmengine's AmpOptimWrapper needs CUDA; its ``loss_scaler`` is what the hook reads, so a
    real torch GradScaler (CPU) on the wrapper reproduces the AMP path."""
    from mmengine.optim import OptimWrapper
    from mmdyrep.engine.dyrep_hook import DyRepHook

    def scored(scale):
        cfg = imagenet_cfg(str(tmp_path / 'data'), str(tmp_path / f'work{scale}'), epochs=1)
        runner = Runner.from_cfg(cfg)
        runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
        runner._train_loop = runner.build_train_loop(runner._train_loop)
        hook = [h for h in runner.hooks if isinstance(h, DyRepHook)][0]
        wrapper = runner.optim_wrapper
        assert isinstance(wrapper, OptimWrapper)
        if scale:
            wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=scale)
        hook.before_run(runner)
        model = runner.model
        torch.manual_seed(0)
        x = torch.randn(2, 3, 32, 32)
        for poison in (False, True):
            model.zero_grad()
            loss = model.backbone(x)[-1].square().mean()
            (wrapper.loss_scaler.scale(loss) if scale else loss).backward()
            if poison:
                next(model.backbone.layer1.parameters()).grad.fill_(float('inf'))
            wrapper.step()
        return hook.evolver.scores.averages()

    plain, amp = scored(None), scored(1024.0)
    assert plain.keys() == amp.keys() and len(plain) > 10
    for name in plain:
        assert amp[name] == pytest.approx(plain[name], rel=1e-4)


def test_bad_configuration_is_refused_before_training(tmp_path):
    from mmdyrep.engine import DyRepHook
    for kwargs, match in ((dict(interval=0), 'interval must be a positive int'),
                          (dict(metric='synfow'), "DyRepHook: unknown saliency metric 'synfow'"),
                          (dict(metric='grasp'), "unknown saliency metric 'grasp'"),
                          (dict(gamma_init=0), 'gamma_init must be a positive number'),
                          (dict(max_depth=-1), 'max_depth must be None or an int >= 0'),
                          (dict(end=0), 'end must be None or an int > begin'),
                          (dict(branches=['2x2']), 'unknown branch types')):
        with pytest.raises(DyRepError, match=match):
            DyRepHook(**kwargs)
    data, work = str(tmp_path / 'data'), str(tmp_path / 'work')

    def refused(cfg, match):
        runner = Runner.from_cfg(cfg)
        with pytest.raises(DyRepError, match=match):
            runner.train()
        assert not glob.glob(osp.join(work, '*.pth'))

    refused(imagenet_cfg(data, work, epochs=2, hook=dict(end=5)),
            r'window begin=0, end=5 lies outside the run \(2 epochs\)')
    refused(imagenet_cfg(data, work, epochs=2, hook=dict(interval=3)), 'no update fits')
    cfg = imagenet_cfg(data, work, epochs=2)
    cfg.model.backbone.type = 'ResNet'
    refused(cfg, 'has no DyRep backbone')
    cfg = imagenet_cfg(data, work, epochs=2)
    cfg.custom_hooks.append(dict(type='EMAHook'))
    refused(cfg, 'cannot run with EMAHook')
    cfg = imagenet_cfg(data, work, epochs=2, compile=True)
    refused(cfg, 'cannot run with cfg.compile')
    cfg = imagenet_cfg(data, work, epochs=2)
    cfg.model.backbone.frozen_stages = 4
    refused(cfg, 'no conv of the backbone may grow')


def test_gradient_accumulation_scores_once_per_optimizer_step(tmp_path):
    optim = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9), accumulative_counts=2)
    cfg = imagenet_cfg(str(tmp_path / 'data'), str(tmp_path / 'work'), epochs=2, hook=dict(interval=2), optim=optim)
    runner = Runner.from_cfg(cfg)
    runner.train()
    iters_per_epoch = len(runner.train_dataloader)
    saved = torch.load(str(tmp_path / 'work' / 'epoch_1.pth'), weights_only=True)['dyrep']['evolver']['scores']
    counts = {name: row['counts'][0] for name, row in saved['ops'].items()}
    assert len(counts) == 17 and set(counts.values()) == {iters_per_epoch // 2}
