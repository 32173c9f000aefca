"""Training cost of DyRep against the plain model, RepVGG-style and DBB (paper Tables 2-3, "Cost").

    python tools/analysis/training_cost.py [--models r18-cls r50-cls r18-det r50-det]
        [--repeats 5] [--device cpu|cuda] [--out cost.json]
    python tools/analysis/training_cost.py --block-shapes 256,50,84,2 ...   # one block: per branch vs merged
    python tools/analysis/training_cost.py --avg-shapes 8,64,56,56,3,1 ...  # the 1x1-AVG branch's average

For each model, one copy per re-parameterization mode, all from the same initial weights (so the
detector heads see the same features and do the same work):

* ``origin``  the plain ResNet;
* ``repvgg``  K×K + 1×1 + residual on every candidate conv (Table 1), grown with Rep (function
  kept, BN calibration) as ``DyRepResNet(rep_mode='repvgg')`` does around loaded weights;
* ``dbb``     K×K + 1×1–K×K + 1×1–AVG + 1×1 on every candidate conv (Table 1), likewise;
* ``dyrep``   the plain ResNet after N grows (Sec. 4.1): each grow scores the candidates with
  the default saliency (``taylor`` over each conv with its BN) on a real batch of the model's own
  loss, grows the top one into a DyRep block with every branch that fits (nested grows allowed once,
  ``max_depth=1`` as the hook),
  calibrates the new BNs on real batches and keeps the output (Eq. 6); grows continue while they
  bring the backbone's parameters closer to ``--dyrep-params-ratio`` (1.25: Table 3's average
  params, ResNet-50) x the plain backbone's. The ratios reached are reported. Its step also scores
  the candidates (``Evolver.record()``), as every DyRep training step does.
* ``dyrep-f`` the same, grown to ``--dyrep-flops-ratio`` (1.25) x the plain backbone's FLOPs
  instead: the saliency may pick convs with many FLOPs per parameter (early stages), so the
  params-sized structure can carry far more FLOPs than Table 3's (+23 % for ResNet-50).
* ``--replay OUT.json``: ``dyrep`` and ``dyrep-f`` repeat the grows and cuts that an earlier run's
  JSON recorded (``<mode>_steps``) instead of choosing by saliency: the same structure across
  commits, machines and devices.
* ``<mode>+fast``: the same model with the backbone's ``fast_forward=True``, the default that users get
  (:func:`mmdyrep.core.fast_block.merged_forward`: one K×K conv per block where the BNs use
  running statistics, e.g. mmdet's ``norm_eval=True``; with training-mode BNs the BNs grouped,
  :mod:`mmdyrep.core.grouped_block`, or the stem's 1×1–AVG branch pooled first). Same function and
  gradients as the per-branch forward, which the plain mode names run (``fast_forward=False``).

A *step* is data preprocessing + forward + loss + backward + SGD step (momentum 0.9) on a fixed
batch. Steps are interleaved round-robin across the modes (the order rotates every round), after
``--warmup`` rounds; the table gives the median over ``--repeats`` rounds and its ratio to origin.

Memory (per mode, one extra step after timing): resident model state (parameters, buffers,
optimizer state) + the peak of the tensor memory allocated during the step above what was
allocated when it began (activations, gradients, temporaries). On CUDA the step peak is
``torch.cuda.max_memory_allocated`` - ``memory_allocated`` at the step start; on CPU it is the
running sum of the allocator events that ``torch.profiler`` records (``profile_memory=True``):
tensor bytes, not the process RSS.

Targets (pass/fail): DyRep step time with the paper-sized structure <= 1.2x origin (aim 1.1x);
DBB >= 1.5x origin (the cost DyRep avoids; the paper: ~1.7x GPU days on ResNet-18).

The models, the evolution and the measurement are :mod:`mmdyrep.analysis.training_cost`; this script
parses the command line, prints the table and writes the JSON.
"""
import argparse
import json
import sys

import torch

from mmdyrep.analysis.timing import machine
from mmdyrep.analysis.training_cost import (BASE_MODES, DYREP_MODES, MODELS, ReplayError, check_targets, quiet_mmengine,
                                            run_avg, run_blocks, run_model, set_threads, write_json)


def print_table(results: dict, checks: list) -> None:
    print()
    print(f'{"model":8} {"mode":12} {"params":>7} {"x":>5} {"GFLOPs":>7} {"x":>5} {"step s":>7} {"x origin":>8} '
          f'{"peak MB":>8} {"x origin":>8}')
    for name, res in results.items():
        for mode, m in res['modes'].items():
            bb = res['backbone'].get(mode.split('+')[0], {})
            print(f'{name:8} {mode:12} {bb.get("params", 0) / 1e6:7.2f} {bb.get("params_ratio", 0):5.2f} '
                  f'{bb.get("flops", 0) / 1e9:7.3f} {bb.get("flops_ratio", 0):5.2f} {m["median_s"]:7.3f} '
                  f'{m.get("time_ratio", float("nan")):8.2f} {m.get("peak_mb", float("nan")):8.0f} '
                  f'{m.get("memory_ratio", float("nan")):8.2f}')
        for mode in DYREP_MODES:
            if res.get(f'{mode}_grown') is not None:
                print(f'{"":8} {mode} grew {len(res[f"{mode}_grown"])} convs: {", ".join(res[f"{mode}_grown"])}')
    print('(params / GFLOPs: backbone, conv+linear MACs for one input of the benchmark size)')
    print()
    for c in checks:
        aim = f', aim {c["aim"]}' if c['aim'] else ''
        note = ' (informative: the fast path removes the cost DBB is measured for)' if c['informative'] else ''
        print(f'{"PASS" if c["pass"] else "FAIL"}  {c["model"]:8} {c["mode"]:11} {c["ratio"]:.2f}x origin '
              f'(target {c["target"]}{aim}){note}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--modes', nargs='+', default=list(BASE_MODES), choices=list(BASE_MODES))
    p.add_argument('--fast', choices=('on', 'off'), default='on',
                   help='also time every mode but origin with the backbone\'s fast_forward=True (<mode>+fast)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--repeats', type=int, default=None, help='timed rounds (default 3 on CPU, 20 on CUDA)')
    p.add_argument('--warmup', type=int, default=None, help='untimed rounds (default 1 on CPU, 5 on CUDA)')
    p.add_argument('--cls-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help='classification input (default 112 112 on CPU, 224 224 on CUDA)')
    p.add_argument('--cls-batch', type=int, default=None, help='default 8 on CPU, 64 on CUDA')
    p.add_argument('--det-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help='detection input (default 256 320 on CPU, 800 1216 on CUDA)')
    p.add_argument('--det-batch', type=int, default=2)
    p.add_argument('--calib-batches', type=int, default=2, help='BN calibration batches per DyRep grow')
    p.add_argument('--dyrep-params-ratio', type=float, default=1.25,
                   help='dyrep: grow until the backbone has this many times the plain parameters '
                   '(Table 3 averages: 1.23 ResNet-50, 1.44 ResNet-18)')
    p.add_argument('--dyrep-flops-ratio', type=float, default=1.25,
                   help='dyrep-f: grow until the backbone has this many times the plain FLOPs '
                   '(Table 3 averages: 1.23 ResNet-50, 1.34 ResNet-18)')
    p.add_argument('--replay', default=None, metavar='OUT.json',
                   help="dyrep / dyrep-f: grow (and cut) exactly what an earlier run's --out JSON recorded, instead "
                   "of choosing by saliency: the same structure across commits, machines or devices")
    p.add_argument('--no-memory', dest='memory', action='store_false')
    p.add_argument('--block-shapes', nargs='+', default=None, metavar='C,H,W,N',
                   help='instead of the models: time one grown 3x3 conv per shape, per branch vs merged_forward')
    p.add_argument('--block-bn', choices=('eval', 'train'), default='eval',
                   help='--block-shapes: the BNs in eval mode (mmdet norm_eval) or training mode')
    p.add_argument('--avg-shapes', nargs='+', default=None, metavar='N,C,H,W,K,S',
                   help="time the 1x1-AVG branch's KxK average against avg_pool2d instead")
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default on CPU: 1, steadier on a shared machine; 0: torch default)')
    p.add_argument('--out', default=None, help='write the results as JSON')
    args = p.parse_args(argv)
    gpu = set_threads(args)
    args.repeats = args.repeats or (20 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    args.cls_size = args.cls_size or ([224, 224] if gpu else [112, 112])
    args.cls_batch = args.cls_batch or (64 if gpu else 8)
    args.det_size = args.det_size or ([800, 1216] if gpu else [256, 320])
    if 'origin' not in args.modes:
        args.modes = ['origin'] + args.modes
    args.previous = None
    if args.replay:
        try:
            with open(args.replay) as f:
                args.previous = json.load(f)
        except (OSError, ValueError) as e:
            p.error(f'--replay {args.replay}: cannot read it as a training_cost.py --out JSON ({e})')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_mmengine()
    info = machine(args.device)
    print(f'machine: {info}')
    if args.block_shapes:
        blocks = run_blocks(args.block_shapes, args)
        write_json(args, info, blocks=blocks)
        return 0
    if args.avg_shapes:
        write_json(args, info, averages=run_avg(args.avg_shapes, args))
        return 0
    results = {}
    for name in args.models:
        print(f'{name}: building {", ".join(args.modes)} ...', flush=True)
        try:
            results[name] = run_model(name, args)
        except ReplayError as e:
            raise SystemExit(str(e))
    checks = check_targets(results)
    print_table(results, checks)
    write_json(args, info, results=results, targets=checks)
    return 0


if __name__ == '__main__':
    sys.exit(main())
