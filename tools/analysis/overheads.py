"""The overheads DyRep adds to training and deployment, with pass/fail per target.

    python tools/analysis/overheads.py [--repeats 5] [--device cpu|cuda] [--out overheads.json]

Measured on an mmpretrain ResNet-50 classifier with a DyRepResNet backbone, evolved to the paper's
size first (saliency-chosen grows with BN calibration until the backbone has ``--dyrep-params-ratio``
x the plain parameters, as in ``training_cost.py``):

1. scoring: ``Evolver.record()`` (Algorithm 1 line 4: the default saliency of every candidate conv
   with its BN, from their gradients), timed right after ``backward`` in each train step, as a % of the step (data
   preprocessing, forward, backward, SGD step) without it. Target <= 2 % (aim 1 %).
2. one update (lines 7-10): ``Evolver.step`` with BN calibration on 20 batches (each batch through
   the data preprocessor, as the hook does), grow of the top conv, Rep, Dep; in train-step
   equivalents. Target <= 25. The hook's own bookkeeping per update (params/FLOPs count for the
   history, eval-output check on one batch) is reported beside it.
3. deploy: ``switch_to_deploy`` of the evolved backbone (fuse every block, fold the biases into
   the following BNs; branch BNs given random gamma / beta / statistics first, so the branches
   matter) — time, target <= 2 s, and the max relative error of the backbone's eval outputs
   (max |deployed - evolved| / max |evolved| over the four stages, float32), target <= 1e-5.

CPU defaults are small (batch 8 at 224x224, 3 repeats); the scoring % shrinks as the batch grows
(scoring is per parameter, the step per pixel), so a small batch overstates it.

The measurements are :mod:`mmdyrep.analysis.overheads`; this script parses the command line, prints
the results and writes the JSON.
"""
import argparse
import sys

import torch

from mmdyrep.analysis.overheads import check, measure
from mmdyrep.analysis.timing import machine
from mmdyrep.analysis.training_cost import quiet_mmengine, set_threads, write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--depth', type=int, default=50, choices=(18, 34, 50, 101))
    p.add_argument('--size', type=int, nargs=2, default=[224, 224], metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=None, help='default 8 on CPU, 32 on CUDA')
    p.add_argument('--repeats', type=int, default=None, help='timed steps (default 3 on CPU, 30 on CUDA)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps (default 1 on CPU, 5 on CUDA)')
    p.add_argument('--calib-batches', type=int, default=20, help='BN calibration batches per update (paper: 20)')
    p.add_argument('--dyrep-params-ratio', type=float, default=1.25)
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default on CPU: 1, steadier on a shared machine; 0: torch default)')
    p.add_argument('--out', default=None, help='write the results as JSON')
    args = p.parse_args(argv)
    gpu = set_threads(args)
    args.batch = args.batch or (32 if gpu else 8)
    args.repeats = args.repeats or (30 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_mmengine()
    info = machine(args.device)
    print(f'machine: {info}')
    results = measure(args)
    checks = check(results)
    print()
    print(f'model: {results["model"]}, input {results["input"]}, {results["candidates"]} candidate convs, '
          f'evolved to {results["evolved_params_ratio"]:.2f}x params')
    print(f'train step (median of {args.repeats}): {results["step_s"]:.3f}s; Evolver.record(): '
          f'{results["record_s"] * 1e3:.2f}ms')
    print(f'update: {results["update_s"]:.2f}s with {args.calib_batches} calibration batches '
          f'(grew {list(results["grown"])}, cut {results["cut"] or "nothing"}); hook bookkeeping '
          f'{results["hook_bookkeeping_s"]:.2f}s = {results["hook_bookkeeping_iterations"]:.1f} steps')
    print(f'deploy: {results["blocks"]} blocks -> {results["fused_convs"]} convs in {results["deploy_seconds"]:.3f}s')
    for c in checks:
        aim = f', aim {c["aim"]:g}' if c['aim'] else ''
        print(f'{"PASS" if c["pass"] else "FAIL"}  {c["metric"]:22} {c["value"]:.3g} (target {c["target"]}{aim})')
    write_json(args, info, results=results, targets=checks)
    return 0


if __name__ == '__main__':
    sys.exit(main())
