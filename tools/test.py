#!/usr/bin/env python
"""Evaluate a checkpoint of a detector (mmdet), segmentor (mmseg) or classifier (mmpretrain).

One entry for the three toolboxes: the config's ``default_scope`` picks the toolbox. The
checkpoint may be an evolved DyRep checkpoint (its structure is rebuilt on load) or one
deployed by ``tools/deploy.py`` (use the deployed config written beside it). Examples::

    python tools/test.py configs/fpn_dyrep_r50_coco.py work_dirs/fpn_dyrep_r50_coco/epoch_12.pth
    python tools/test.py deployed.py deployed.pth --out results.pkl
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import os.path as osp

from mmdyrep.cli import preflight  # first: mmdyrep.cli hides a library notice before mmengine is imported
from mmdyrep.cli.runner_setup import (add_debug, add_local_rank, build_runner, check_launcher, close_distributed,
                                     default_work_dir, engine_error, fail, import_engine, load_config, run_main,
                                     set_local_rank_env)
from mmengine.config import DictAction
from mmengine.logging import print_log


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) an mmdet / mmseg / mmpretrain model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', help='dump the predictions to a pickle file (.pkl / .pickle)')
    parser.add_argument('--show-dir', help='save images painted with the predictions in this directory')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, xxx=yyy')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    add_debug(parser)
    add_local_rank(parser)
    return parser.parse_args(argv)


def enable_show_dir(cfg, scope: str, show_dir: str) -> None:
    """Turn on each toolbox's visualization hook, saving painted images to ``show_dir``."""
    hook = cfg.default_hooks.get('visualization') if 'default_hooks' in cfg else None
    if hook is None:
        fail('--show-dir: the config has no default_hooks.visualization')
    show_dir = osp.abspath(show_dir)
    if scope == 'mmdet':
        hook.update(draw=True, show=False, test_out_dir=show_dir)
    elif scope == 'mmseg':
        hook.update(draw=True, show=False, interval=1)
        cfg.visualizer['save_dir'] = show_dir
    else:
        hook.update(enable=True, show=False, out_dir=show_dir)


def drop_training_hooks(cfg) -> None:
    """DyRepHook evolves the model during training only; testing loads the evolved structure from
    the checkpoint (it travels in the state dict), so the hook is left out."""
    hooks = cfg.get('custom_hooks') or []
    kept = [h for h in hooks if str(h.get('type', '')).split('.')[-1] != 'DyRepHook']
    if len(kept) != len(hooks):
        cfg.custom_hooks = kept
        print_log('testing: DyRepHook left out (it acts during training; the checkpoint holds the structure)',
                  logger='current')


def dump_metric(scope: str, out: str):
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out)


def main(argv=None):
    args = parse_args(argv)
    set_local_rank_env(args)
    check_launcher(args.launcher)
    cfg, scope = load_config(args.config, args.cfg_options)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        fail(f'--out must name a .pkl or .pickle file, got {args.out}')
    if import_engine() is None:  # a stock (deployed) config needs no mmdyrep; the checks below read with it
        print_log(f'mmdyrep.engine cannot be imported ({engine_error()}): a checkpoint saved by the Runner '
                  '(with message_hub) may fail to load under torch >= 2.6', logger='current', level=30)
        if not osp.isfile(args.checkpoint):
            fail(f'checkpoint not found: {args.checkpoint}')
    else:
        preflight.check_config(cfg, args.config, scope)
        preflight.check_checkpoint(args.checkpoint, 'checkpoint', cfg, args.config, scope)
    preflight.check_data(cfg, args.config, preflight.loaders_of(cfg, 'test'))
    cfg.work_dir = default_work_dir(cfg, args.config, args.work_dir)
    cfg.load_from = args.checkpoint
    drop_training_hooks(cfg)
    if args.show_dir:
        enable_show_dir(cfg, scope, args.show_dir)

    runner = build_runner(cfg, scope, args.launcher)
    if args.out is not None:
        runner.test_evaluator.metrics.append(dump_metric(scope, args.out))
    metrics = runner.test()
    close_distributed()
    return metrics


if __name__ == '__main__':
    run_main(main)
