#!/usr/bin/env python
"""A GPU step's cost by a model fit to issue 12's H200 measurements, from counts made on any machine.

    python tools/analysis/gpu_model.py [--archs resnet18 resnet50] [--batches 64 256] [--size 224]
        [--out gpu_model.json]

Counts one train step of origin / RepVGG / DBB / DyRep (per branch and ``+fast``) on PyTorch's ``meta``
device in fp32 and bf16 (:func:`mmdyrep.analysis.benchmark.model_counts`), fits the models of
:mod:`mmdyrep.analysis.roofline` to the H200's per-branch ratios per precision: ``sum`` (bytes /
bandwidth + multiply-adds / rate + kernels x launch) and ``floor`` (every kernel the longer of a launch
and its own work), each twice (every measured mode: ``all``; DyRep and RepVGG only: ``no-dbb``), and
prints the measured and modelled ratios to origin of every mode. No GPU needed; a few minutes on a
2-core CPU for both archs.
"""
import argparse
import json
import sys

import torch

from mmdyrep.analysis import roofline
from mmdyrep.analysis.benchmark import MODES, PRECISIONS, model_counts, models_for

FITS = {'all': ('dyrep', 'dbb', 'repvgg'), 'no-dbb': ('dyrep', 'repvgg')}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--archs', nargs='+', default=['resnet18', 'resnet50'], choices=['resnet18', 'resnet50'])
    p.add_argument('--batches', nargs='+', type=int, default=[64, 256])
    p.add_argument('--size', type=int, default=224, help='input height = width')
    p.add_argument('--out', default=None)
    args = p.parse_args(argv)
    if min(args.batches) < 1 or args.size < 32:
        p.error('--batches >= 1, --size >= 32')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    costs = {}
    for arch in args.archs:
        models = models_for(arch, MODES, 'cpu')
        for precision, dtype in PRECISIONS.items():
            for batch in args.batches:
                counted = model_counts(models, batch, args.size, dtype or torch.float32)['costs']
                costs[(arch, precision, batch)] = counted
    fits, models = {}, {}
    for model in roofline.MODELS:  # the sum model's fits keep their names; the others' are name/model
        for name, modes in FITS.items():
            key = name if model == 'sum' else f'{name}/{model}'
            models[key] = model
            fits[key] = {precision: roofline.fit(obs, model=model)
                         for precision, obs in roofline.observations(costs, modes=modes).items()}
    lines = []
    for name, by_precision in fits.items():
        for precision, (machine, rms) in by_precision.items():
            lines.append(f'fit {name:12} {precision}: {machine.balance:7.1f} multiply-adds per byte, a launch = '
                         f'{machine.launch_bytes / 1e6:6.1f} MB moved; rms log residual {rms:.3f}')
    rows = []
    for (arch, precision, batch), counted in costs.items():
        measured = roofline.H200_PER_BRANCH.get((arch, precision, batch), {})
        for mode, c in counted.items():
            row = {'arch': arch, 'precision': precision, 'batch': batch, 'mode': mode,
                   'measured': measured.get(mode)}
            for name, by_precision in fits.items():
                if precision in by_precision:
                    row[name] = roofline.ratio(c, counted['origin'], by_precision[precision][0], models[name])
            rows.append(row)
            modelled = '  '.join(f'{name} {row[name]:5.2f}x' for name in fits if name in row)
            seen = '' if row['measured'] is None else f'  measured {row["measured"]:.2f}x'
            lines.append(f'{arch:9} {precision} {batch:4d} {mode:12} model: {modelled}{seen}')
    print('\n'.join(lines))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'command': ' '.join(sys.argv), 'size': args.size, 'rows': rows,
                       'fits': {name: {p: {'balance': m.balance, 'launch_bytes': m.launch_bytes, 'rms_log': rms}
                                       for p, (m, rms) in by.items()} for name, by in fits.items()},
                       'costs': {'/'.join(map(str, key)): {mode: c._replace(launches=len(c.launches))._asdict()
                                                           for mode, c in value.items()}
                                 for key, value in costs.items()}}, f, indent=1)
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
