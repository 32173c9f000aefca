#!/usr/bin/env python
"""Exactness of grow / fast forward / cut / deploy and bf16 training steps of the core on one device.

    python tools/analysis/device_checks.py [--device cuda] [--archs resnet18 resnet50] [--out OUT.json]

PyTorch and torchvision only (:mod:`mmdyrep.analysis.device_checks`); prints each check's relative
error and exits 1 when one exceeds its bound (float32, TF32 off: 1e-4 for outputs, gradients 1e-3 (the
fast forward against the per-branch one, and in channels_last against the default memory format); a
finite bf16 run within 20 % of the per-branch run's loss).
"""
import argparse
import json
import sys

import torch

from mmdyrep.analysis.device_checks import check_device

BOUNDS = {'grow': 1e-4, 'fast_train': 1e-3, 'fast_norm_eval': 1e-4, 'channels_last': 1e-3, 'cut': 1e-4, 'deploy': 1e-4,
          'bf16_steps': 0.2}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--archs', nargs='+', default=['resnet18', 'resnet50'], choices=['resnet18', 'resnet50'])
    p.add_argument('--batch', type=int, default=None, help='default 32 on CUDA, 2 on CPU')
    p.add_argument('--size', type=int, default=None, help='default 224 on CUDA, 64 on CPU')
    p.add_argument('--out', default=None)
    args = p.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device {args.device}: this PyTorch sees no CUDA device')
    gpu = args.device.startswith('cuda')
    batch, size = args.batch or (32 if gpu else 2), args.size or (224 if gpu else 64)
    result, failed = {}, []
    for arch in args.archs:
        result[arch] = check_device(args.device, arch, batch=batch, size=size)
        for key, value in result[arch].items():
            ok = value <= BOUNDS[key]
            failed += [] if ok else [f'{arch} {key}']
            print(f'{arch:9} {key:15} {value:.2e}  {"ok" if ok else "ABOVE " + str(BOUNDS[key])}', flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'device': args.device, 'gpu': torch.cuda.get_device_name(args.device) if gpu else None,
                       'torch': torch.__version__, 'batch': batch, 'size': size, 'bounds': BOUNDS,
                       'errors': result, 'command': ' '.join(sys.argv)}, f, indent=1)
    if failed:
        print(f'above bound: {", ".join(failed)}', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
