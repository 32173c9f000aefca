"""Real toolbox models from the toolboxes' own configs, with the backbone swapped to DyRepResNet,
and small real batches for them (shared by the model, engine and e2e tests)."""
import copy
import importlib

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdyrep.datasets.batches import random_batch

TOOLBOX_CONFIGS = {
    'mmdet': 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'mmseg': 'mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    'mmpretrain': 'mmpretrain::resnet/resnet50_8xb32_in1k.py',
}
SCOPES = {'mmdet': 'mmdet', 'mmseg': 'mmseg', 'mmpretrain': 'mmpretrain'}


def toolbox_config_path(toolbox: str) -> str:
    """The installed file behind ``TOOLBOX_CONFIGS[toolbox]`` (``pkg::path``)."""
    import os.path as osp
    from mmengine.utils import get_installed_path
    package, path = TOOLBOX_CONFIGS[toolbox].split('::')
    return osp.join(get_installed_path(package), '.mim', 'configs', path)


def _bn(cfg):
    """SyncBN -> BN everywhere (single CPU process)."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
        for v in cfg.values():
            _bn(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _bn(v)


def model_config(toolbox: str, dyrep: bool = True, **backbone) -> Config:
    """The toolbox's own model config; backbone DyRep* (or stock), no pretrained download."""
    importlib.import_module(f'mmdyrep.models.{toolbox}_resnet')
    cfg = Config.fromfile(toolbox_config_path(toolbox))
    model = copy.deepcopy(cfg.model)
    _bn(model)
    model.pop('pretrained', None)
    model.backbone.init_cfg = None
    if dyrep:
        model.backbone.type = 'DyRep' + model.backbone.type
    # zero_init_residual zeroes each block's last BN at init: no gradient would reach the
    # 3x3 convs of a model built from scratch (pretrained weights never look like that)
    model.backbone.zero_init_residual = False
    model.backbone.update(backbone)
    if toolbox == 'mmseg':  # the Cityscapes preprocessor pads every batch to 512x1024
        model.data_preprocessor.size = None
        model.data_preprocessor.size_divisor = 32
    cfg.model = model
    return cfg


def build(toolbox: str, dyrep: bool = True, **backbone):
    cfg = model_config(toolbox, dyrep, **backbone)
    init_default_scope(SCOPES[toolbox])
    registry = importlib.import_module(f'{toolbox}.registry').MODELS
    model = registry.build(cfg.model)
    model.init_weights()
    return model


def batch(toolbox: str, seed: int = 0, size=(96, 128), batch_size: int = 2):
    """A small real batch (inputs + data samples) for ``model.data_preprocessor``."""
    return random_batch(toolbox, size, batch_size, seed)


def loss_of(model, data) -> torch.Tensor:
    data = model.data_preprocessor(data, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    return loss


def features(model, data):
    """Eval-mode backbone features (a tuple) for a batch."""
    data = model.data_preprocessor(data, False)
    with torch.no_grad():
        return model.backbone(data['inputs'])


def predict_tensor(model, data) -> torch.Tensor:
    """Eval-mode raw head output (``mode='tensor'``) flattened to one tensor."""
    data = model.data_preprocessor(data, False)
    with torch.no_grad():
        out = model(**data, mode='tensor')
    flat = []

    def collect(x):
        if isinstance(x, torch.Tensor):
            flat.append(x.reshape(-1))
        elif isinstance(x, (list, tuple)):
            for v in x:
                collect(v)
        elif isinstance(x, dict):
            for k in sorted(x):
                collect(x[k])

    collect(out)
    return torch.cat(flat)
