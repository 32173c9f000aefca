#!/usr/bin/env python
"""Kernels (on a GPU; aten ops elsewhere) and time of one train step of a single 3x3 DyRep block.

    python tools/analysis/block_kernels.py [--device cuda] [--channels 64] [--size 56] [--batch 64]
        [--precision bf16] [--compile-backend inductor | --no-compile] --out OUT.json
    python tools/analysis/block_kernels.py --host [--rounds 25] --out OUT.json

Needs torch only (see :mod:`mmdyrep.analysis.kernels`): conv + BN against the block grown from it with
every branch type (dyrep), with DBB's set and with RepVGG's, per branch, fast, and fast under
torch.compile. With ``--out``, the JSON is rewritten after every variant, so a run stopped by a time
limit keeps what it measured. ``--host`` instead times what issuing each variant's train step costs the
host, on CPU (``kernels.host_times``: tiny inputs, one thread, oneDNN off, BNs grouped as on a GPU).
"""
import argparse
import json
import sys

import torch

from mmdyrep.analysis import kernels
from mmdyrep.analysis.benchmark import PRECISIONS
from mmdyrep.analysis.timing import machine


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    gpu = torch.cuda.is_available()
    p.add_argument('--device', default='cuda' if gpu else 'cpu')
    p.add_argument('--channels', type=int, default=64)
    p.add_argument('--size', type=int, default=56 if gpu else 16, help='input height = width')
    p.add_argument('--batch', type=int, default=64 if gpu else 2)
    p.add_argument('--precision', default='bf16' if gpu else 'fp32', choices=list(PRECISIONS))
    p.add_argument('--compile-backend', default='inductor', help="torch.compile backend (tests: 'aot_eager')")
    p.add_argument('--no-compile', dest='compile_backend', action='store_const', const=None,
                   help='leave out the compiled variants')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--host', action='store_true',
                   help="the host's time per train step on CPU (tiny inputs), instead of kernels and time")
    p.add_argument('--rounds', type=int, default=25, help='--host: rounds of 12 steps per variant')
    p.add_argument('--out', default=None)
    args = p.parse_args(argv)
    if min(args.channels, args.size, args.batch, args.repeats, args.rounds) < 1 or args.warmup < 0:
        p.error('--channels, --size, --batch, --repeats and --rounds >= 1, --warmup >= 0')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device {args.device}: this PyTorch sees no CUDA device')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = ' '.join(sys.argv)

    def save(result: dict) -> None:
        if args.out:
            with open(args.out, 'w') as f:
                json.dump({**result, 'command': command}, f, indent=1)

    if args.host:
        result = {'input': list(kernels.HOST_INPUT), 'rounds': args.rounds, 'machine': machine(),
                  'variants': kernels.host_times(rounds=args.rounds)}
        save(result)
        print(f"3x3 block, input {'x'.join(map(str, kernels.HOST_INPUT))}, CPU, 1 thread: the host's time per "
              'train step (forward + backward), x conv + BN, fast x per branch')
        for name, res in result['variants'].items():
            per_branch = f'  {res["vs_per_branch"]:5.2f}x per branch' if 'vs_per_branch' in res else ''
            print(f'  {name:12s} {res["us"]:8.0f} us {res["ratio"]:5.2f}x{per_branch}')
        if args.out:
            print(f'wrote {args.out}')
        return 0
    result = kernels.block_kernels(args.device, args.channels, args.size, args.batch, args.precision,
                                   args.compile_backend, args.warmup, args.repeats, progress=save)
    print('\n'.join(kernels.table(result)))
    if args.out:
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
