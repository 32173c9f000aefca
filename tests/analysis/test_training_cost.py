"""The library behind the training-cost and overhead benchmarks (mmdyrep.analysis.training_cost, .overheads,
.timing), on an mmpretrain ResNet-18 classifier at 32x32: a grow's planned cost is what the grow adds, a
replay repeats a recorded evolution, the Evolver is built with the hook's defaults, targets are judged
as stated. The scripts end to end: tests/analysis/test_benchmarks.py."""
import copy
import time
from types import SimpleNamespace

import pytest

import torch

from mmdyrep.analysis import overheads
from mmdyrep.analysis import training_cost as tc
from mmdyrep.analysis.timing import issued, machine, num_params, timed
from mmdyrep.core import extract_structure, iter_blocks
from mmdyrep.models.complexity import count
from mmdyrep.models.dyrep_resnet import backbone_of

SHAPE = (3, 32, 32)


@pytest.fixture(scope='module')
def classifier():
    tc.quiet_mmengine()
    return tc.build_model('mmpretrain', 18, 'dyrep', 'cpu')


@pytest.fixture(scope='module')
def batches():
    return [tc.make_batch('mmpretrain', SHAPE[1:], 2, seed=i) for i in range(2)]


# a 3x3 conv with the residual branch (64->64, stride 1); one without (64->128, stride 2); a nested grow
GROWS = [['layer1.0.conv2'], ['layer2.0.conv1'], ['layer1.0.conv1', 'layer1.0.conv1.branches.1x1_kxk.kxk']]


@pytest.mark.parametrize('names', GROWS)
def test_grow_cost_is_what_the_grow_adds(classifier, names):
    """The params and conv MACs ``grow_cost`` plans for a grow (before it happens) are the increase
    ``models.complexity.count`` then measures, nested grows included (the K×K in a 1x1_kxk branch reads
    its input padded: 10x10 here where the conv it grew from reads 8x8)."""
    model = copy.deepcopy(classifier)
    backbone = backbone_of(model)
    sizes = tc.conv_sizes(backbone, SHAPE)
    assert sizes['layer2.0.conv1'] == ((8, 8), (4, 4))  # 32 / 4 after the stem, then stride 2
    evolver = tc.dyrep_evolver(backbone)
    for name in names:
        before = count(backbone, SHAPE)
        planned = tc.grow_cost(backbone, name, sizes)
        assert evolver.grow([name])
        after = count(backbone, SHAPE)
        assert planned == (after['params'] - before['params'], after['flops'] - before['flops']), name
        assert planned[0] > 0 and planned[1] > 0


def test_dyrep_evolver_takes_the_hooks_defaults(classifier):
    from mmdyrep.engine.dyrep_hook import DyRepHook
    hook = DyRepHook()
    backbone = backbone_of(copy.deepcopy(classifier))
    evolver = tc.dyrep_evolver(backbone)
    for key in ('metric', 'topk', 'branches', 'gamma_init', 'dep', 'dep_threshold', 'max_depth'):
        assert getattr(evolver, key) == getattr(hook, key), key
    assert evolver.max_depth == 1 and evolver.topk == 1


def test_evolve_then_replay_gives_the_same_structure(classifier, batches):
    """Two saliency-chosen grows, recorded as steps; replaying the steps on the plain model's copy gives
    the same structure, the same conv names and the same parameters."""
    data, calib = batches[0], batches[1:]
    model, fresh = copy.deepcopy(classifier), copy.deepcopy(classifier)
    reference = count(backbone_of(model), SHAPE)
    _, grown, steps = tc.evolve_dyrep(model, data, calib, 2.0, reference, SHAPE, max_grows=2)
    assert len(grown) == 2 and [s['grown'] for s in steps] == [[g] for g in grown]
    _, replayed = tc.replay_dyrep(fresh, steps, calib)
    assert replayed == grown
    assert extract_structure(backbone_of(fresh)) == extract_structure(backbone_of(model))
    assert num_params(fresh) == num_params(model) > num_params(classifier)
    # grows stop when the next would overshoot the target more than it closes
    model = copy.deepcopy(classifier)
    _, none, _ = tc.evolve_dyrep(model, data, calib, 1.0, reference, SHAPE)
    assert none == [] and not list(iter_blocks(model))


def test_replay_with_cuts_and_recorded_steps():
    previous = {'results': {'r18-cls': {'dyrep_grown': ['a', 'b'], 'dyrep-f_grown': ['c'],
                                        'dyrep-f_steps': [{'grown': ['c'], 'cut': {'c': ['1x1']}}]}}}
    assert tc.recorded_steps(previous, 'r18-cls', 'dyrep', 'x.json') == [{'grown': ['a'], 'cut': {}},
                                                                        {'grown': ['b'], 'cut': {}}]
    assert tc.recorded_steps(previous, 'r18-cls', 'dyrep-f', 'x.json') == [{'grown': ['c'], 'cut': {'c': ['1x1']}}]
    with pytest.raises(tc.ReplayError, match=r"--replay x.json: no 'dyrep' structure for model 'r50-cls' in it "
                       r'\(it has: r18-cls\)'):
        tc.recorded_steps(previous, 'r50-cls', 'dyrep', 'x.json')
    with pytest.raises(tc.ReplayError, match=r'\(it has: no model results\)'):
        tc.recorded_steps({}, 'r18-cls', 'dyrep', 'x.json')


def test_replay_cuts_what_was_cut(classifier, batches):
    model = copy.deepcopy(classifier)
    steps = [{'grown': ['layer1.0.conv2'], 'cut': {}},
             {'grown': ['layer2.0.conv2'], 'cut': {'layer1.0.conv2': ['1xk']}}]
    _, grown = tc.replay_dyrep(model, steps, batches[:1])
    assert grown == ['layer1.0.conv2', 'layer2.0.conv2']
    blocks = dict(iter_blocks(backbone_of(model)))
    assert '1xk' not in blocks['layer1.0.conv2'].branches and '1xk' in blocks['layer2.0.conv2'].branches


def test_check_targets_judges_each_ratio():
    def res(**ratios):
        return {'modes': {m: {'time_ratio': r} for m, r in ratios.items()}}
    results = {'a': res(origin=1.0, dyrep=1.15, dbb=1.7, **{'dyrep+fast': 1.25, 'dbb+fast': 1.1}),
               'b': {'modes': {'origin': {'time_ratio': 1.0}, 'dyrep-f': {'median_s': 1.0}}}}  # no ratio: skipped
    checks = {(c['model'], c['mode']): c for c in tc.check_targets(results)}
    assert set(checks) == {('a', 'dyrep'), ('a', 'dyrep+fast'), ('a', 'dbb'), ('a', 'dbb+fast')}
    assert checks['a', 'dyrep']['pass'] and not checks['a', 'dyrep+fast']['pass']
    assert checks['a', 'dbb']['pass'] and not checks['a', 'dbb+fast']['pass']
    assert checks['a', 'dbb+fast']['informative'] and not checks['a', 'dbb']['informative']
    assert checks['a', 'dyrep'] == {'model': 'a', 'mode': 'dyrep', 'ratio': 1.15, 'target': '<= 1.2', 'aim': 1.1,
                                    'pass': True, 'informative': False}
    judged = {c['metric']: c['pass'] for c in overheads.check(
        {'scoring_percent': 2.5, 'update_iterations': 25.0, 'deploy_seconds': 0.1, 'deploy_max_rel_error': 1e-6})}
    assert judged == {'scoring_percent': False, 'update_iterations': True, 'deploy_seconds': True,
                      'deploy_max_rel_error': True}


def test_runner_times_a_step_and_its_memory(classifier, batches):
    model = copy.deepcopy(classifier)
    runner = tc.Runner('origin', model, batches[0], 'cpu')
    before = [p.detach().clone() for p in model.parameters()]
    assert runner.timed_step() > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the SGD step happened
    state = tc.state_bytes(model, runner.optimizer)  # parameters, buffers and the momentum buffers
    assert state > 2 * 4 * num_params(model)
    assert runner.peak_step_bytes() > 0


def test_deploy_keeps_the_evolved_output(classifier, batches):
    model = copy.deepcopy(classifier)
    tc.replay_dyrep(model, [{'grown': ['layer1.0.conv2', 'layer3.0.conv1'], 'cut': {}}], batches[:1])
    res = overheads.measure_deploy(model, batches[0], SimpleNamespace(device='cpu'))
    assert res['blocks'] == 2 and res['fused_convs'] >= 2 and res['deploy_max_rel_error'] < 1e-5


def test_timing_helpers():
    seconds, out = timed(lambda: 3, 'cpu')
    assert out == 3 and seconds >= 0
    seconds, host, out = issued(lambda: time.sleep(0.01) or 4, 'cpu')  # on CPU the host's time is the step's
    assert out == 4 and seconds >= host >= 0.01 and host > 0.5 * seconds
    info = machine('cpu')
    # the keys both benchmarks wrote (training_cost / overheads and torchvision_cost)
    assert {'nproc', 'cpu', 'torch', 'threads', 'python', 'device'} <= set(info) and info['device'] == 'cpu'
    assert 'device' not in machine() and machine()['threads'] == torch.get_num_threads()
