#!/usr/bin/env python
"""Training cost of DyRep, RepVGG and DBB against the plain model on torchvision ResNets: PyTorch only.

    python tools/analysis/torchvision_cost.py [--archs resnet18 resnet50] [--precisions fp32 bf16]
        [--batches 64 256] [--device cuda] [--structure resnet50=STRUCTURE.json] [--channels-last]
        [--compile [--compile-backend inductor]] [--no-per-branch] --out OUT.json

Needs torch and torchvision, nothing from OpenMMLab: the command for a GPU machine (see
:mod:`mmdyrep.analysis.benchmark` for the modes and the measurement). Prints per setting the median
train step, its ratio to origin and peak memory; per arch the aten ops and bytes moved by one train
step (counted on ``meta`` at the smallest batch and ``--size``; ``--counts-only``: nothing else), then
the same for one 3x3 block.
``--structure ARCH=FILE`` replays an evolved structure (a JSON object as ``extract_structure`` gives,
or a file holding one under ``dyrep_structure``) instead of the fixed Table-3-sized one.
``--channels-last`` runs models and input in ``torch.channels_last`` memory format; ``--compile`` also
times ``torch.compile`` of origin and of every ``+fast`` model (give one batch and one precision: each
new one compiles again); ``--no-per-branch`` leaves out the per-branch reference forwards. With
``--out``, the JSON is rewritten after every setting, so a run stopped by a time limit keeps what it
measured.
"""
import argparse
import json
import sys

import torch

from mmdyrep.analysis import benchmark


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    gpu = torch.cuda.is_available()
    p.add_argument('--archs', nargs='+', default=list(benchmark.ARCHS), choices=list(benchmark.ARCHS))
    p.add_argument('--modes', nargs='+', default=list(benchmark.MODES), choices=list(benchmark.MODES))
    p.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'], choices=list(benchmark.PRECISIONS))
    p.add_argument('--batches', nargs='+', type=int, default=[64, 256] if gpu else [8])
    p.add_argument('--size', type=int, default=224 if gpu else 112, help='input height = width')
    p.add_argument('--device', default='cuda' if gpu else 'cpu')
    p.add_argument('--warmup', type=int, default=5 if gpu else 1)
    p.add_argument('--repeats', type=int, default=20 if gpu else 3)
    p.add_argument('--threads', type=int, default=1, help='CPU threads (0: torch default)')
    p.add_argument('--structure', action='append', default=[], metavar='ARCH=FILE')
    p.add_argument('--channels-last', action='store_true', help='models and input in channels_last memory format')
    p.add_argument('--compile', action='store_true', help='also torch.compile origin and every +fast model')
    p.add_argument('--compile-backend', default='inductor', help="torch.compile backend (tests: 'aot_eager')")
    p.add_argument('--no-per-branch', dest='per_branch', action='store_false',
                   help='leave out the per-branch reference forwards (only origin and +fast)')
    p.add_argument('--counts-only', action='store_true',
                   help='no timing: only the aten ops and bytes moved per train step (on meta, at the first '
                        'batch and --size)')
    p.add_argument('--out', default=None)
    args = p.parse_args(argv)
    if args.counts_only:
        args.precisions = []
    if 'origin' not in args.modes:
        args.modes = ['origin'] + args.modes
    if any(b < 1 for b in args.batches) or args.size < 32 or args.repeats < 1 or args.warmup < 0:
        p.error('--batches >= 1, --size >= 32, --repeats >= 1 and --warmup >= 0')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device {args.device}: this PyTorch sees no CUDA device')
    args.structures = {}
    for item in args.structure:
        arch, _, path = item.partition('=')
        if arch not in benchmark.ARCHS or not path:
            p.error(f'--structure {item}: expected ARCH=FILE with ARCH one of {", ".join(benchmark.ARCHS)}')
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            p.error(f'--structure {item}: cannot read {path} as JSON ({e})')
        args.structures[arch] = data.get('dyrep_structure', data)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == 'cpu' and args.threads:
        torch.set_num_threads(args.threads)
    command = ' '.join(sys.argv)

    def save(result: dict) -> None:
        if args.out:
            with open(args.out, 'w') as f:
                json.dump({**result, 'command': command}, f, indent=1)

    result = benchmark.run(args.archs, args.modes, args.batches, args.precisions, args.size, args.device,
                           args.warmup, args.repeats, args.structures, log=lambda s: print(s, flush=True),
                           per_branch=args.per_branch, channels_last=args.channels_last,
                           compile_backend=args.compile_backend if args.compile else None, progress=save)
    print()
    print('\n'.join(benchmark.table(result)))
    save(result)
    if args.out:
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
