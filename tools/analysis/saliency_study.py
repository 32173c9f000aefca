#!/usr/bin/env python
"""Saliency study: which metric sees what matters for the loss, on a config's real model and data.

    python tools/analysis/saliency_study.py CONFIG [--iters 40] [--window 20] [--metrics synflow ...]
        [--grow 1] [--loss-check-steps 20] [--seeds 0 1 2] --out OUT.json

The config's model, train data (with its augmentation), optimizer and loss; its DyRepHook is left
out (the study drives the evolver itself) but gives the defaults: the metric under study
(``default``), ``max_depth``, BN-calibration batches and the input shape of the norm trace. Steps
(see :mod:`mmdyrep.analysis.saliency_study`): warm-up, a grow so that origins and inner K×K convs
compete, two windows scored by every metric, a float32 / float64 check of the top-1 and a loss check
(top- vs bottom-ranked grow, no target). Prints a table, writes the JSON with ``--out``::

    {"default": "synflow", "metrics": {"synflow": {"degeneracy": 0.03, "spearman": 0.8,
     "top": [[...5], [...5]], "kinds": {...}, "precision_agree": true, "passes": {...}}, ...},
     "loss_check": {...}, "machine": {...}, "command": "..."}

Targets for the default metric: degeneracy ratio >= 1e-2, Spearman >= 0.6, same top-1 in float32
and float64. The other metrics are judged by the same numbers for comparison.
"""
import argparse
import json
import sys
import tempfile
import warnings

if '--verbose' not in sys.argv:  # the toolboxes' deprecation notes (some at import) say nothing about this study
    warnings.filterwarnings('ignore')

from mmdyrep.cli.runner_setup import build_runner, fail, load_config, run_main  # noqa: E402
from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    from mmdyrep.core import METRICS
    from mmdyrep.analysis.saliency_study import STUDY_METRICS
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('config', help='a DyRep training config (mmdet, mmseg or mmpretrain)')
    p.add_argument('--iters', type=int, default=40, help='warm-up optimizer steps before the grow (default 40)')
    p.add_argument('--window', type=int, default=20, help='optimizer steps per scoring window (default 20)')
    scorable = [m for m in METRICS if m not in ('grasp', 'vote')]
    p.add_argument('--metrics', nargs='+', default=list(STUDY_METRICS), choices=scorable)
    p.add_argument('--default', choices=scorable, default=None,
                   help="the metric under study (default: the config's DyRepHook metric)")
    p.add_argument('--grow', type=int, default=1, help='convs grown after the warm-up (default 1; 0: none)')
    p.add_argument('--loss-check-steps', type=int, default=20,
                   help='train steps per run of the loss check (default 20; 0: no loss check)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='loss-check seeds (default 0 1 2)')
    p.add_argument('--work-dir', default=None, help='where the runner may write logs (default: a temporary dir)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    p.add_argument('--out', default=None, help='write the results as JSON')
    p.add_argument('--verbose', action='store_true', help="show the libraries' warnings and INFO logs too")
    args = p.parse_args(argv)
    for name in ('iters', 'window'):
        if getattr(args, name) < 1:
            p.error(f'--{name} must be >= 1, got {getattr(args, name)}')
    if args.grow < 0 or args.loss_check_steps < 0:
        p.error('--grow and --loss-check-steps must be >= 0')
    return args


def hook_settings(cfg) -> dict:
    """The DyRepHook's entry of ``custom_hooks`` (removed from the config), with its defaults."""
    from mmdyrep.engine import DyRepHook
    hooks = list(cfg.get('custom_hooks') or [])
    mine = [h for h in hooks if str(h.get('type', '')).split('.')[-1] == 'DyRepHook']
    cfg.custom_hooks = [h for h in hooks if h not in mine]
    settings = dict(mine[0]) if mine else {}
    settings.pop('type', None)
    hook = DyRepHook(**settings)  # validates the arguments, fills the defaults
    return {'metric': hook.metric, 'max_depth': hook.max_depth, 'calib_batches': hook.num_calib_batches or 4,
            'example_shape': hook.flops_input_shape}


def print_table(result: dict) -> None:
    print()
    print(f'{"metric":13} {"degeneracy":>10} {"spearman":>8} {"f32=f64":>7}  top-1 (window 1 / 2)  kinds of the top-5s')
    for name, m in result['metrics'].items():
        rho = 'n/a' if m['spearman'] is None else f'{m["spearman"]:.2f}'
        deg = 'n/a' if m['degeneracy'] is None else f'{m["degeneracy"]:.1e}'
        agree = {True: 'yes', False: 'NO', None: 'n/a'}[m['precision_agree']]
        tops = ' / '.join(t[0] if t else '-' for t in m['top'])
        star = '*' if name == result['default'] else ' '
        print(f'{name + star:13} {deg:>10} {rho:>8} {agree:>7}  {tops}  {m["kinds"]}')
    print(f'(* the default; {result["candidates"]} candidates {result["candidate_kinds"]}, norms '
          f'{"/".join(result["norm_modes"])}; grew {", ".join(result["grown"]) or "nothing"} after the warm-up)')
    if result.get('precision_float64_scope') == 'backbone':
        print(f'(f32=f64: the backbone alone ran in float64: {result["precision_error"]})')
    check = result['loss_check']
    if check.get('runs'):
        print(f'loss check ({check["steps"]} steps, seeds {check["seeds"]}): mean training loss with nothing grown '
              f'{check["mean_none"]:.4f}, top-ranked {check["top"]} grown {check["mean_top"]:.4f}, bottom-ranked '
              f'{check["bottom"]} grown {check["mean_bottom"]:.4f}; top lower in {check["top_lower_in"]} of '
              f'{len(check["runs"])} seeds')
    d = result['metrics'][result['default']]['passes']
    verdict = {k: {True: 'PASS', False: 'FAIL', None: 'n/a'}[v] for k, v in d.items()}
    print(f'default {result["default"]}: degeneracy >= 1e-2 {verdict["degeneracy"]}, spearman >= 0.6 '
          f'{verdict["spearman"]}, same top-1 in float32/float64 {verdict["precision"]}')


def main(argv=None):
    args = parse_args(argv)
    cfg, scope = load_config(args.config, args.cfg_options)
    try:
        settings = hook_settings(cfg)
    except Exception as e:  # noqa: BLE001  (DyRepError: a bad hook argument in the config)
        fail(f'config {args.config}: {e}')
    cfg.work_dir = args.work_dir or tempfile.mkdtemp(prefix='saliency_study_')
    cfg.log_level = 'INFO' if args.verbose else 'WARNING'
    runner = build_runner(cfg, scope, 'none')
    from mmdyrep.analysis.saliency_study import run_study
    from mmdyrep.analysis.timing import machine
    default = args.default or settings['metric']
    result = run_study(runner, iters=args.iters, window=args.window, metrics=args.metrics, default=default,
                       grow=args.grow, loss_steps=args.loss_check_steps, seeds=args.seeds,
                       calib_batches=settings['calib_batches'], max_depth=settings['max_depth'],
                       example_shape=settings['example_shape'], log=lambda s: print(s, flush=True))
    result.update(config=args.config, machine=machine(), command=' '.join(sys.argv))
    print_table(result)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'wrote {args.out}')


if __name__ == '__main__':
    run_main(main)
