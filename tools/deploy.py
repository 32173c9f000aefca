#!/usr/bin/env python
"""Deploy a DyRep checkpoint: fold every evolved block back into one conv (Sec. 4, deploy).

    python tools/deploy.py CONFIG CHECKPOINT OUT [--no-verify] [--image IMG] [--cfg-options ...]

CHECKPOINT is a checkpoint of the model CONFIG describes (a detector, segmentor or classifier
with a DyRepResNet backbone, as the Runner saves it, evolved or not), or a state dict of the
backbone alone. OUT gets the same model with a plain ResNet: the stock toolbox class
(``type='ResNet'`` / ``'ResNetV1c'`` / ...) loads it with ``strict=True``. The deployed config
(DyRep removed from the backbone type, DyRep-only arguments, DyRepHook and mmdyrep imports
dropped) is written beside OUT, as OUT with the suffix ``.py``::

    python tools/deploy.py configs/fpn_dyrep_r50_coco.py work_dirs/fpn_dyrep_r50_coco/epoch_12.pth fpn.pth
    python tools/test.py fpn.py fpn.pth          # the stock detector, no mmdyrep needed

Unless ``--no-verify``, the evolved and the deployed model run on the same input in eval mode
(``--image``, through the config's test pipeline, else a random tensor) and the tool prints the
maximum absolute and relative error of the backbone features and of the raw head output; a
relative error above ``--tolerance`` (1e-5) is a failure. Nothing is written unless every check
passes; the input is never overwritten.
"""
import argparse
import copy
import importlib
import inspect
import os
import os.path as osp
from typing import Dict, List, Tuple

from mmdyrep.cli import preflight  # first: mmdyrep.cli hides a library notice before mmengine is imported
from mmdyrep.cli.preflight import dyrep_backbones, short_type
from mmdyrep.cli.runner_setup import add_debug, fail, load_config, run_main, sync_bn_to_bn
from mmdyrep.core import DyRepBlock
from mmdyrep.models.dyrep_resnet import DyRepResNetMixin
import torch
from mmengine.config import Config, DictAction

#: backbone arguments that only DyRepResNet knows (rep_mode, grow_candidates, fast_forward, ...)
DYREP_ARGS = tuple(name for name, p in inspect.signature(DyRepResNetMixin.__init__).parameters.items()
                   if p.kind is p.KEYWORD_ONLY)
DEPLOY_META_KEY = 'dyrep_deploy'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Deploy an evolved DyRep checkpoint to a plain ResNet checkpoint')
    parser.add_argument('config', help='config of the DyRep model (the training config)')
    parser.add_argument('checkpoint', help='evolved checkpoint: the whole model, or the backbone alone')
    parser.add_argument('out', help='deployed checkpoint to write (its config goes to OUT with the suffix .py)')
    parser.add_argument('--verify', action=argparse.BooleanOptionalAction, default=True,
                        help='compare the evolved and the deployed model on one input (default: on)')
    parser.add_argument('--image', help='input image for the check, read through the test pipeline '
                        '(default: a random tensor)')
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'),
                        help='size of the random input (default 224 224)')
    parser.add_argument('--tolerance', type=float, default=1e-5,
                        help='largest accepted relative error (default 1e-5)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    add_debug(parser)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ checkpoint
def state_dict_of(ckpt: dict, path: str) -> Dict[str, torch.Tensor]:
    state = preflight.state_dict_of(ckpt)
    if not state:
        fail(f'{path} holds no state dict')
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        fail(f'{path}: the state dict has non-tensor entries ({", ".join(map(str, bad[:5]))}); '
             'is this a model checkpoint?')
    return dict(state)


def structure_keys(state: dict) -> List[str]:
    from mmdyrep.models import STRUCTURE_KEY
    return [k for k in state if k == STRUCTURE_KEY or k.endswith('.' + STRUCTURE_KEY)]


# ---------------------------------------------------------------------------------- config
def make_dyrep(model_cfg: dict, scope: str) -> None:
    """A stock ResNet backbone config -> the DyRepResNet variant (for an evolved checkpoint whose
    config names the stock class)."""
    from mmdyrep.models.toolboxes import VARIANTS, register
    register(scope)
    backbone = model_cfg.get('backbone')
    kind = short_type(backbone.get('type')) if isinstance(backbone, dict) else ''
    if 'DyRep' + kind not in VARIANTS:
        fail(f"the checkpoint holds a DyRep structure but the config's backbone is {kind or 'missing'}; "
             'use the DyRep training config (backbone DyRepResNet / DyRepResNetV1c / DyRepResNetV1d)')
    backbone['type'] = 'DyRep' + kind


def stock_model_cfg(model_cfg: dict, scope: str) -> dict:
    """The model config with every DyRep backbone replaced by the toolbox's stock ResNet."""
    from mmdyrep.models.toolboxes import VARIANTS
    registry = importlib.import_module(f'{scope}.registry').MODELS
    stock = copy.deepcopy(model_cfg)
    for _, node in dyrep_backbones(stock):
        name = short_type(node['type'])
        for arg in DYREP_ARGS:
            node.pop(arg, None)
        plain = name[len('DyRep'):]
        if registry.get(plain) is None:  # e.g. mmdet has no ResNetV1c: the ResNet with its settings
            node.update(VARIANTS.get(name, {}))
            plain = 'ResNet'
        node['type'] = plain
    return stock


def deployed_config(cfg: Config, scope: str, out: str, backbone_only: bool) -> Config:
    """The config of the deployed model: stock backbone, no DyRepHook, no mmdyrep imports."""
    cfg = copy.deepcopy(cfg)
    cfg.model = stock_model_cfg(cfg.model, scope)
    hooks = [h for h in cfg.get('custom_hooks', []) or [] if short_type(h.get('type')) != 'DyRepHook']
    if 'custom_hooks' in cfg:
        cfg.custom_hooks = hooks
    imports = cfg.get('custom_imports')
    if imports:
        kept = [m for m in imports.get('imports', []) if not m.split('.')[0] == 'mmdyrep']
        if kept:
            cfg.custom_imports = dict(imports, imports=kept)
        else:
            cfg._cfg_dict.pop('custom_imports')
    out = osp.abspath(out)
    if backbone_only:
        if 'pretrained' in cfg.model:
            cfg.model.pretrained = None
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=out)
    else:
        cfg.load_from = out
    return cfg


def build_model(model_cfg: dict, scope: str) -> torch.nn.Module:
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    model_cfg = copy.deepcopy(model_cfg)
    sync_bn_to_bn(model_cfg)  # same state dict; SyncBN cannot run on CPU tensors
    registry = importlib.import_module(f'{scope}.registry').MODELS
    return registry.build(model_cfg).eval()


# ---------------------------------------------------------------------------------- loading
def load_strict(module: torch.nn.Module, state: dict, what: str) -> None:
    from mmdyrep.core import DyRepError
    try:
        result = module.load_state_dict(state, strict=False)
    except (RuntimeError, DyRepError) as e:
        fail(f'the checkpoint does not fit {what}: {str(e).strip()[:2000]}')
    problems = []
    for label, keys in (('missing in the checkpoint', result.missing_keys),
                        ('unexpected (not in the model)', result.unexpected_keys)):
        if keys:
            shown = ', '.join(keys[:12]) + (f', ... ({len(keys)} in all)' if len(keys) > 12 else '')
            problems.append(f'{len(keys)} keys {label}: {shown}')
    if problems:
        fail(f'the checkpoint does not fit {what}: ' + '; '.join(problems))


# ------------------------------------------------------------------------------------ verify
def test_pipeline_cfg(cfg: Config) -> list:
    if cfg.get('test_pipeline'):
        return copy.deepcopy(cfg.test_pipeline)
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset['dataset']
    if 'pipeline' not in dataset:
        fail('--image: the config has no test pipeline (test_pipeline or test_dataloader.dataset.pipeline)')
    return copy.deepcopy(dataset['pipeline'])


def image_batch(cfg: Config, scope: str, image: str) -> dict:
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    steps = [t for t in test_pipeline_cfg(cfg) if 'LoadAnnotations' not in short_type(t.get('type'))]
    try:
        data = Compose(steps)(dict(img_path=image, img_id=0))
    except Exception as e:  # noqa: BLE001
        fail(f'--image {image}: the test pipeline failed: {type(e).__name__}: {e}')
    return pseudo_collate([data])


def random_batch(scope: str, shape) -> Tuple[torch.Tensor, list]:
    h, w = shape
    inputs = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        samples = [DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                               scale_factor=(1.0, 1.0), batch_input_shape=(h, w)))]
    elif scope == 'mmseg':
        from mmseg.structures import SegDataSample
        samples = [SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))]
    else:
        from mmpretrain.structures import DataSample
        samples = [DataSample()]
    return inputs, samples


def flatten(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out.float()]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in flatten(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten(v)]
    return []


def head_outputs(model, inputs, samples) -> Tuple[list, list]:
    """(backbone features, raw head output) in eval mode. A two-stage detector's RoI head runs
    on proposals passed in, so that both models see the same boxes (NMS is not continuous)."""
    feats = flatten(model.backbone(inputs))
    if hasattr(model, 'rpn_head') and hasattr(model, 'roi_head') and getattr(model, 'with_rpn', False):
        x = model.extract_feat(inputs)
        return feats, flatten(model.rpn_head(x)), x
    return feats, flatten(model(inputs, samples, mode='tensor')), None


def compare(name: str, before: List[torch.Tensor], after: List[torch.Tensor]) -> Tuple[float, float]:
    if len(before) != len(after) or any(a.shape != b.shape for a, b in zip(after, before)):
        fail(f'{name}: the deployed model gives outputs of other shapes')
    abs_err = max((a - b).abs().max().item() for a, b in zip(after, before))
    scale = max(b.abs().max().item() for b in before)
    rel_err = abs_err / max(scale, 1e-12)
    print(f'  {name:<18} max abs error {abs_err:.3e}   relative {rel_err:.3e}   (max |output| {scale:.3e})')
    return abs_err, rel_err


@torch.no_grad()
def verify(evolved, stock, cfg, scope, image, shape, tolerance, backbone_only) -> dict:
    if image is not None:
        data = evolved.data_preprocessor(image_batch(cfg, scope, image), False)
        inputs, samples = data['inputs'], data['data_samples']
        source = f'{image} ({tuple(inputs.shape[-2:])} after the test pipeline)'
    else:
        inputs, samples = random_batch(scope, shape)
        source = f'a random tensor {tuple(inputs.shape)}'
    print(f'verify on {source}, eval mode:')
    results = {}
    if backbone_only:
        results['backbone'] = compare('backbone features', flatten(evolved.backbone(inputs)),
                                      flatten(stock.backbone(inputs)))
    else:
        f0, h0, x0 = head_outputs(evolved, inputs, samples)
        f1, h1, x1 = head_outputs(stock, inputs, samples)
        results['backbone'] = compare('backbone features', f0, f1)
        if x0 is None:
            results['head'] = compare('head output', h0, h1)
        else:
            results['rpn_head'] = compare('RPN head output', h0, h1)
            proposals = evolved.rpn_head.predict(x0, samples, rescale=False)
            r0 = flatten(evolved.roi_head.forward(x0, copy.deepcopy(proposals), samples))
            r1 = flatten(stock.roi_head.forward(x1, copy.deepcopy(proposals), samples))
            results['roi_head'] = compare('RoI head output', r0, r1)
    worst = max(rel for _, rel in results.values())
    if not worst <= tolerance:  # also catches NaN
        fail(f'verification failed: relative error {worst:.3e} > tolerance {tolerance:g}; nothing written')
    print(f'verified: largest relative error {worst:.3e} <= {tolerance:g}')
    return {k: dict(abs=a, rel=r) for k, (a, r) in results.items()}


# -------------------------------------------------------------------------------------- main
def check_paths(config: str, checkpoint: str, out: str) -> str:
    if osp.splitext(out)[1] == '.py':
        fail(f'OUT must be a checkpoint path, not a .py file: {out}')
    out_cfg = osp.splitext(out)[0] + '.py'
    for path, what in ((checkpoint, 'the input checkpoint'), (config, 'the input config')):
        for target in (out, out_cfg):
            same = osp.realpath(target) == osp.realpath(path)
            if not same and osp.exists(target) and osp.exists(path):
                same = osp.samefile(target, path)
            if same:
                fail(f'{target} is {what}: refusing to overwrite it; choose another OUT')
    if osp.isdir(out):
        fail(f'OUT is a directory: {out}')
    return out_cfg


def save_atomic(obj, path: str, save) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def main(argv=None):
    args = parse_args(argv)
    out_cfg_path = check_paths(args.config, args.checkpoint, args.out)
    if args.image is not None and not osp.isfile(args.image):
        fail(f'--image not found: {args.image}')
    cfg, scope = load_config(args.config, args.cfg_options)
    from mmdyrep.models import switch_to_deploy
    importlib.import_module(f'mmdyrep.models.{scope}_resnet')
    preflight.check_config(cfg, args.config, scope, registered=False)

    # another depth is left to load_strict (it names the keys that do not fit); a stock backbone type is
    # turned into its DyRep variant (make_dyrep)
    ckpt = preflight.check_checkpoint(args.checkpoint, 'checkpoint', cfg, args.config, scope, compare_depth=False,
                                      need_dyrep=False)
    state = state_dict_of(ckpt, args.checkpoint)
    evolved_keys = structure_keys(state)
    if not dyrep_backbones(cfg.model):
        if not evolved_keys:
            fail(f'not a DyRep checkpoint: {args.checkpoint} has no dyrep_structure entry and the model of '
                 f'{args.config} has no DyRep backbone; there is nothing to deploy')
        make_dyrep(cfg.model, scope)
    backbone_only = 'backbone' in cfg.model and not any(k.startswith('backbone.') for k in state)

    evolved = build_model(cfg.model, scope)
    target = evolved.backbone if backbone_only else evolved
    what = (f'the backbone of {args.config} (keys without "backbone.": a backbone state dict)'
            if backbone_only else f'the model of {args.config}')
    load_strict(target, state, what)
    n_blocks = sum(1 for m in evolved.modules() if isinstance(m, DyRepBlock))
    print(f'loaded {args.checkpoint}: {"backbone state dict" if backbone_only else "whole model"}, '
          f'{n_blocks} DyRep blocks (nested ones included)'
          + ('' if evolved_keys else ' (no evolved structure in the checkpoint)'))

    deployed = copy.deepcopy(evolved)
    fused = switch_to_deploy(deployed)
    deployed_state = (deployed.backbone if backbone_only else deployed).state_dict()
    deployed_state = {k: v.detach().cpu().clone() for k, v in deployed_state.items()}

    stock_cfg = stock_model_cfg(cfg.model, scope)
    stock = build_model(stock_cfg, scope)
    try:
        (stock.backbone if backbone_only else stock).load_state_dict(deployed_state, strict=True)
    except RuntimeError as e:
        fail(f'internal error: the stock model does not load the deployed weights strictly: {e}')
    print(f'deployed: {len(fused)} convs fused; the stock model ({stock_cfg["backbone"]["type"]} backbone) '
          'loads the result with strict=True')

    report = None
    if args.verify:
        report = verify(evolved, stock, cfg, scope, args.image, args.shape, args.tolerance, backbone_only)

    if 'state_dict' in ckpt:
        meta = dict(ckpt.get('meta') or {})
        meta[DEPLOY_META_KEY] = dict(source=osp.abspath(args.checkpoint), config=osp.abspath(args.config),
                                     fused_convs=fused, verify=report)
        out = dict(meta=meta, state_dict=deployed_state)
    else:
        out = deployed_state
    save_atomic(out, args.out, torch.save)
    deployed_config(cfg, scope, args.out, backbone_only).dump(out_cfg_path)
    if backbone_only:
        usage = f'stock config, its backbone initialised from {args.out}: python tools/train.py {out_cfg_path}'
    else:
        usage = f'stock config: python tools/test.py {out_cfg_path} {args.out}'
    print(f'wrote {args.out}\nwrote {out_cfg_path} ({usage})')


if __name__ == '__main__':
    run_main(main)
