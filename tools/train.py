#!/usr/bin/env python
"""Train a detector (mmdet), segmentor (mmseg) or classifier (mmpretrain) from a config.

One entry for the three toolboxes: the config's ``default_scope`` picks the toolbox. Examples::

    python tools/train.py configs/fpn_dyrep_r50_coco.py
    python tools/train.py configs/tiny/faster-rcnn_dyrep_r50_fpn_synthetic-coco.py --work-dir work_dirs/q
    python tools/train.py CONFIG --resume                  # latest checkpoint in the work dir
    bash tools/dist_train.sh configs/imagenet_dyrep_r50.py 8

Without CUDA the tool runs on the CPU: ``SyncBN`` norms become ``BN`` (logged), and
``--launcher pytorch`` (``tools/dist_train.sh``) uses a gloo process group and a DDP wrapper
that accepts CPU modules.
"""
import argparse

from mmdyrep.cli import preflight  # first: mmdyrep.cli hides a library notice before mmengine is imported
from mmdyrep.cli.runner_setup import (add_debug, add_local_rank, build_runner, check_launcher, close_distributed,
                                     default_work_dir, fail, load_config, require_engine, run_main,
                                     set_local_rank_env)
from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train an mmdet / mmseg / mmpretrain model (DyRep)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models (default ./work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training (GPU only)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the LR by the real total batch size (needs auto_scale_lr in the config)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or without a path from the latest '
                        'checkpoint in the work directory')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, xxx=yyy (e.g. train_cfg.max_epochs=2 '
                        'model.backbone.init_cfg=None)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    add_debug(parser)
    add_local_rank(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    set_local_rank_env(args)
    check_launcher(args.launcher)
    cfg, scope = load_config(args.config, args.cfg_options)
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    preflight.check_config(cfg, args.config, scope)

    if args.amp:
        import torch
        if not torch.cuda.is_available():
            fail('--amp needs a GPU: mmengine\'s AmpOptimWrapper runs on CUDA (or NPU/MLU) only')
        kind = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if kind not in ('OptimWrapper', 'AmpOptimWrapper'):
            fail(f'--amp works with optim_wrapper type OptimWrapper, the config has {kind}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            fail('--auto-scale-lr: the config has no auto_scale_lr=dict(base_batch_size=...)')
        cfg.auto_scale_lr.enable = True

    if args.resume is not None:
        require_engine('--resume (mmengine checkpoints hold classes that torch >= 2.6 refuses to unpickle '
                       'unless mmdyrep.engine allow-lists them)')
        cfg.resume = True
        if args.resume == 'auto':
            cfg.load_from = None
            checkpoint = preflight.resume_checkpoint(cfg.work_dir)
        else:
            checkpoint = cfg.load_from = args.resume
        if preflight.is_local(checkpoint):
            preflight.check_checkpoint(checkpoint, '--resume', cfg, args.config, scope)
    elif preflight.is_local(cfg.get('load_from')):
        preflight.check_checkpoint(cfg.load_from, 'load_from', cfg, args.config, scope)
    preflight.check_data(cfg, args.config, preflight.loaders_of(cfg, 'train'))

    runner = build_runner(cfg, scope, args.launcher)
    runner.train()
    close_distributed()


if __name__ == '__main__':
    run_main(main)

