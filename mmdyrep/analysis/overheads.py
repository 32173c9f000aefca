"""The overheads DyRep adds to training and deployment, judged against targets: the library behind
``tools/analysis/overheads.py`` (which describes the measurements and the targets).

:func:`measure` evolves an mmpretrain ResNet classifier to the paper's size (:func:`.training_cost.evolve_dyrep`)
and measures :func:`measure_scoring` (``Evolver.record()`` as a % of a train step), :func:`measure_update`
(one ``Evolver.step`` with BN calibration, in train steps, and the hook's bookkeeping per update) and
:func:`measure_deploy` (``switch_to_deploy`` time and the eval-output error it leaves, branch BNs
randomised first by :func:`randomise_branch_norms`); :func:`check` judges the results (:data:`TARGETS`).
"""
import copy
import statistics

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmdyrep.models.dyrep_resnet import backbone_of
from .timing import num_params, timed
from .training_cost import build_model, dyrep_evolver, evolve_dyrep, loss_of, make_batch, meets

#: metric: (op, limit, aim)
TARGETS = {
    'scoring_percent': ('<=', 2.0, 1.0),
    'update_iterations': ('<=', 25.0, None),
    'deploy_seconds': ('<=', 2.0, None),
    'deploy_max_rel_error': ('<=', 1e-5, None),
}


def measure_scoring(model, evolver, data, args) -> dict:
    """Train steps (forward + backward + SGD) with ``Evolver.record()`` timed apart right after backward:
    the medians of ``args.repeats`` steps after ``args.warmup`` and the scoring as a % of a step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
    steps, records = [], []
    model.train()
    for i in range(args.warmup + args.repeats):
        backward_s, _ = timed(lambda: loss_of(model, data).backward(), args.device)
        record_s, _ = timed(evolver.record, args.device)
        sgd_s, _ = timed(lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)), args.device)
        if i >= args.warmup:
            steps.append(backward_s + sgd_s)
            records.append(record_s)
        print(f'  scoring: round {i + 1}: step {backward_s + sgd_s:.3f}s, record {record_s * 1e3:.2f}ms', flush=True)
    step, record = statistics.median(steps), statistics.median(records)
    return {'step_s': step, 'record_s': record, 'scoring_percent': 100 * record / step,
            'candidates': len(evolver.candidates()), 'steps_s': steps, 'records_s': records}


def measure_update(model, evolver, data, step_s: float, args) -> dict:
    """One ``Evolver.step`` (grow of the top conv with BN calibration on ``args.calib_batches`` batches,
    Rep, Dep) after two scored steps, in seconds and in train steps of ``step_s``; beside it the hook's own
    bookkeeping per update (params / FLOPs count, eval outputs before and after on one batch)."""
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
def randomise_branch_norms(backbone, seed=0) -> None:
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


def measure_deploy(model, data, args) -> dict:
    """``switch_to_deploy`` of a copy of the evolved backbone (branch BNs randomised): its time and the max
    relative error of the eval outputs, deployed against evolved."""
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
    """Every metric of :data:`TARGETS` in ``results`` judged against its target."""
    out = []
    for key, (op, limit, aim) in TARGETS.items():
        value = results[key]
        out.append({'metric': key, 'value': value, 'target': f'{op} {limit:g}', 'aim': aim,
                    'pass': meets(value, op, limit)})
    return out


def measure(args) -> dict:
    """The whole measurement (``args``: the command line's options): an mmpretrain ResNet-``args.depth``
    classifier evolved to ``args.dyrep_params_ratio`` x the plain backbone's parameters, then scoring,
    one update and deploy, each with its numbers in one dict."""
    from mmdyrep.models.complexity import count
    size = tuple(args.size)
    data = make_batch('mmpretrain', size, args.batch, seed=0)
    model = build_model('mmpretrain', args.depth, 'dyrep', args.device)
    reference = count(backbone_of(model), (3, *size))
    grow_batches = [make_batch('mmpretrain', size, args.batch, seed=100 + i) for i in range(2)]
    evolver, grown, _ = evolve_dyrep(model, data, grow_batches, args.dyrep_params_ratio, reference, (3, *size))
    ratio = num_params(backbone_of(model)) / reference['params']
    print(f'evolved ResNet-{args.depth}: grew {", ".join(grown)}; backbone params {ratio:.3f}x plain')
    evolver = dyrep_evolver(backbone_of(model))
    results = {'model': f'mmpretrain ResNet-{args.depth} classifier', 'input': [args.batch, 3, *size],
               'evolved_params_ratio': ratio, 'evolved_grown': grown}
    results.update(measure_scoring(model, evolver, data, args))
    evolver.scores.reset()
    results.update(measure_update(model, evolver, data, results['step_s'], args))
    results.update(measure_deploy(model, data, args))
    return results


__all__ = ['TARGETS', 'check', 'measure', 'measure_deploy', 'measure_scoring', 'measure_update',
           'randomise_branch_norms']
