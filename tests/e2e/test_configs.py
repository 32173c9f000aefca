"""Every config under configs/ loads with Config.fromfile, builds its model, and its hooks build."""
import copy
import importlib

import pytest
from mmengine.config import Config
from mmengine.registry import HOOKS, init_default_scope

from .helpers import REPO

CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)
NAMES = [str(p.relative_to(REPO / 'configs')) for p in CONFIGS]


def test_the_configs_the_users_expect_exist():
    expected = [
        'fpn_dyrep_r50_coco.py', 'fpn_dyrep_r50_coco_cd.py', 'fpn_origin_r50_coco.py', 'fpn_dbb_r50_coco.py',
        'fpn_repvgg_r50_coco.py', 'pspnet_dyrep_r50-d8_cityscapes.py', 'pspnet_dyrep_r50-d8_cityscapes_cd.py',
        'pspnet_origin_r50-d8_cityscapes.py', 'pspnet_dbb_r50-d8_cityscapes.py', 'imagenet_dyrep_r18.py',
        'imagenet_dyrep_r34.py', 'imagenet_dyrep_r50.py', 'imagenet_origin_r18.py', 'imagenet_origin_r50.py',
        'imagenet_dbb_r18.py', 'imagenet_dbb_r50.py', 'imagenet_repvgg_r18.py', 'imagenet_repvgg_r50.py'
    ]
    assert not set(expected) - set(NAMES)
    assert len([n for n in NAMES if n.startswith('tiny/')]) >= 3


@pytest.mark.parametrize('path', CONFIGS, ids=NAMES)
def test_config_loads_and_builds(path):
    cfg = Config.fromfile(str(path))
    scope = cfg.default_scope
    assert scope in ('mmdet', 'mmseg', 'mmpretrain')
    backbone = cfg.model.backbone
    assert backbone.type.startswith('DyRep')
    hooks = [h for h in cfg.get('custom_hooks', []) if h.type == 'DyRepHook']
    assert bool(hooks) == (backbone.get('rep_mode', 'dyrep') == 'dyrep')
    for hook in hooks:  # DyRepHook validates its arguments when built
        HOOKS.build(copy.deepcopy(hook))
    if '_cd' in path.name:
        assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
    init_default_scope(scope)
    model = importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == backbone.type
    assert model.backbone.rep_mode == backbone.get('rep_mode', 'dyrep')
    evolved = any(type(m).__name__ == 'DyRepBlock' for m in model.backbone.modules())
    assert evolved == (model.backbone.rep_mode in ('dbb', 'repvgg'))


def test_paper_schedules():
    """Sec. 5.1 (ImageNet) and Table 5 (downstream) settings, as the configs state them."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'imagenet_dyrep_r50.py'))
    assert cfg.train_cfg.max_epochs == 120 and cfg.train_dataloader.batch_size * 8 == 256
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert cfg.param_scheduler.type == 'CosineAnnealingLR'
    assert (cfg.custom_hooks[0].interval, cfg.custom_hooks[0].end) == (5, 100)
    det = Config.fromfile(str(REPO / 'configs' / 'fpn_dyrep_r50_coco.py'))
    assert det.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='torchvision://resnet50')
    assert det.custom_hooks[0].interval == 1 and det.custom_hooks[0].end < det.train_cfg.max_epochs
    seg = Config.fromfile(str(REPO / 'configs' / 'pspnet_dyrep_r50-d8_cityscapes.py'))
    assert seg.train_cfg.type == 'IterBasedTrainLoop'
    assert seg.custom_hooks[0].end < seg.train_cfg.max_iters
