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
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

from mmdyrep.models.dyrep_resnet import backbone_of  # noqa: E402
from training_cost import (_sync, set_threads, build_model, dyrep_evolver, evolve_dyrep,  # noqa: E402
                           loss_of, machine, make_batch, num_params, quiet_mmengine, write_json)

TARGETS = {
    'scoring_percent': ('<=', 2.0, 1.0),
    'update_iterations': ('<=', 25.0, None),
    'deploy_seconds': ('<=', 2.0, None),
    'deploy_max_rel_error': ('<=', 1e-5, None),
}


def timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def measure_scoring(model, evolver, data, args):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
    steps, records = [], []
    model.train()
    for i in range(args.warmup + args.repeats):
        _sync(args.device)
        t0 = time.perf_counter()
        loss_of(model, data).backward()
        _sync(args.device)
        t1 = time.perf_counter()
        evolver.record()
        _sync(args.device)
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(args.device)
        t3 = time.perf_counter()
        if i >= args.warmup:
            steps.append((t1 - t0) + (t3 - t2))
            records.append(t2 - t1)
        print(f'  scoring: round {i + 1}: step {(t1 - t0) + (t3 - t2):.3f}s, record {(t2 - t1) * 1e3:.2f}ms',
              flush=True)
    step, record = statistics.median(steps), statistics.median(records)
    return {'step_s': step, 'record_s': record, 'scoring_percent': 100 * record / step,
            'candidates': len(evolver.candidates()), 'steps_s': steps, 'records_s': records}


def measure_update(model, evolver, data, step_s, args):
    from mmdyrep.core import extract_structure
    from mmdyrep.models.complexity import count
    backbone = backbone_of(model)
    size = tuple(args.size)
    calib = [make_batch('mmpretrain', size, args.batch, seed=1000 + i) for i in range(args.calib_batches)]

    def calibrate(bb):
        for batch in calib:
            bb(model.data_preprocessor(batch, True)['inputs'])

    model.train()
    for _ in range(2):  # scores to decide on
        loss_of(model, data).backward()
        evolver.record()
        model.zero_grad(set_to_none=True)
    before = extract_structure(backbone)
    seconds, report = timed(lambda: evolver.step(calibrate=calibrate), args.device)
    assert extract_structure(backbone) != before, 'the update grew nothing'
    probe = model.data_preprocessor(data, False)['inputs']

    def bookkeeping():
        count(backbone, (3, *size))
        backbone.eval()
        with torch.no_grad():
            backbone(probe)
            backbone(probe)
        backbone.train()

    book_s, _ = timed(bookkeeping, args.device)
    return {'update_s': seconds, 'update_iterations': seconds / step_s, 'calib_batches': args.calib_batches,
            'grown': report['grown'], 'cut': report['cut'], 'hook_bookkeeping_s': book_s,
            'hook_bookkeeping_iterations': book_s / step_s}


@torch.no_grad()
def randomise_branch_norms(backbone, seed=0):
    """Give every branch BN random gamma / beta / statistics: the branches then carry real weight."""
    from mmdyrep.core import iter_blocks
    g = torch.Generator().manual_seed(seed)
    for _, block in iter_blocks(backbone):
        for branch in block.branches.values():
            for m in branch.modules():
                if isinstance(m, _BatchNorm):
                    shape = m.weight.shape
                    m.weight.copy_(torch.rand(shape, generator=g).to(m.weight))
                    m.bias.copy_((torch.randn(shape, generator=g) * 0.1).to(m.bias))
                    m.running_mean.copy_((torch.randn(shape, generator=g) * 0.1).to(m.running_mean))
                    m.running_var.copy_((torch.rand(shape, generator=g) + 0.5).to(m.running_var))


def measure_deploy(model, data, args):
    from mmdyrep.core import iter_blocks, relative_error
    from mmdyrep.models import switch_to_deploy
    evolved = copy.deepcopy(backbone_of(model))
    randomise_branch_norms(evolved)
    evolved.eval()
    inputs = model.data_preprocessor(data, False)['inputs']
    with torch.no_grad():
        before = evolved(inputs)
    blocks = sum(1 for _ in iter_blocks(evolved))
    seconds, fused = timed(lambda: switch_to_deploy(evolved), args.device)
    assert not any(True for _ in iter_blocks(evolved))
    with torch.no_grad():
        after = evolved(inputs)
    error = max(relative_error(a, b) for a, b in zip(after, before))
    return {'deploy_seconds': seconds, 'deploy_max_rel_error': error, 'blocks': blocks, 'fused_convs': len(fused),
            'dtype': str(next(evolved.parameters()).dtype)}


def check(results: dict) -> list:
    out = []
    for key, (op, limit, aim) in TARGETS.items():
        value = results[key]
        ok = value <= limit if op == '<=' else value >= limit
        out.append({'metric': key, 'value': value, 'target': f'{op} {limit:g}', 'aim': aim, 'pass': ok})
    return out


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
    from mmdyrep.models.complexity import count
    args = parse_args(argv)
    quiet_mmengine()
    info = machine()
    print(f'machine: {info}')
    size = tuple(args.size)
    data = make_batch('mmpretrain', size, args.batch, seed=0)
    model = build_model('mmpretrain', args.depth, 'dyrep', args.device)
    reference = count(backbone_of(model), (3, *size))
    grow_batches = [make_batch('mmpretrain', size, args.batch, seed=100 + i) for i in range(2)]
    evolver, grown, _ = evolve_dyrep(model, data, grow_batches, args.dyrep_params_ratio, reference, (3, *size))
    ratio = num_params(backbone_of(model)) / reference['params']
    print(f'evolved ResNet-{args.depth}: grew {", ".join(grown)}; backbone params {ratio:.3f}x plain')
    backbone = backbone_of(model)
    evolver = dyrep_evolver(backbone)
    results = {'model': f'mmpretrain ResNet-{args.depth} classifier', 'input': [args.batch, 3, *size],
               'evolved_params_ratio': ratio, 'evolved_grown': grown}
    results.update(measure_scoring(model, evolver, data, args))
    evolver.scores.reset()
    results.update(measure_update(model, evolver, data, results['step_s'], args))
    results.update(measure_deploy(model, data, args))
    checks = check(results)
    print()
    print(f'model: {results["model"]}, input {results["input"]}, {results["candidates"]} candidate convs, '
          f'evolved to {ratio:.2f}x params')
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
