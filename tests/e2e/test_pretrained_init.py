"""The configs' backbone init paths: ``init_cfg=dict(type='Pretrained', ...)`` through mmengine's
``init_weights`` (what the Runner calls before training; it refuses parameters created while it
runs unless they are registered), for the static baselines (stock weights into a DBB / RepVGG
backbone) and for stage C+D (an evolved ImageNet checkpoint, structure included)."""
import copy

import pytest
import torch
from mmengine.config import Config

from .helpers import REPO


def backbone_cfg(config, **changes):
    cfg = copy.deepcopy(Config.fromfile(str(REPO / 'configs' / config)).model.backbone)
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize('config', ['fpn_dbb_r50_coco.py', 'fpn_repvgg_r50_coco.py'])
def test_static_baseline_starts_from_stock_weights(config, tmp_path):
    import mmdyrep.models.mmdet_resnet  # noqa: F401
    from mmdet.models.backbones import ResNet
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    stock = ResNet(depth=18, frozen_stages=1, norm_eval=True)
    stock.eval()  # (the toolboxes' ResNet.train returns None)
    for m in stock.modules():  # non-trivial statistics, so that a wrong Rep would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / 'resnet18.pth'
    torch.save(stock.state_dict(), path)
    backbone = MODELS.build(backbone_cfg(config, depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    backbone.init_weights()
    assert any(type(m).__name__ == 'DyRepBlock' for m in backbone.modules())
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(backbone(x), stock(x)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cd_init_from_an_evolved_classifier_checkpoint(tmp_path):
    """Stage C+D: the mmdet backbone takes the structure and weights of an evolved mmpretrain
    ResNet (prefix='backbone.'), through init_weights."""
    import mmdyrep.models.mmdet_resnet  # noqa: F401
    import mmdyrep.models.mmpretrain_resnet as pretrain
    from mmdet.registry import MODELS
    from mmdyrep.core import extract_structure, grow
    torch.manual_seed(0)
    imagenet = pretrain.DyRepResNet(depth=18)
    imagenet.eval()
    batches = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    grow(imagenet, ['layer2.0.conv2', 'layer3.1.conv1'], calibrate=lambda m: [m(x) for x in batches])
    state = {f'backbone.{k}': v for k, v in imagenet.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(4, 512)
    path = tmp_path / 'imagenet_evolved.pth'
    torch.save(dict(meta={}, state_dict=state), path)

    cfg = backbone_cfg('fpn_dyrep_r50_coco_cd.py', depth=18)
    cfg.init_cfg.checkpoint = str(path)
    backbone = MODELS.build(cfg)
    backbone.init_weights()
    assert extract_structure(backbone) == extract_structure(imagenet)
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x)[-1], imagenet(x)[-1], rtol=1e-4, atol=1e-5)
