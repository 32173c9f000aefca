"""tools/analysis/saliency_study.py end to end on the tiny mmpretrain config (real model, data with its
random augmentation, optimizer and loss), and the plain-data helpers it reports with."""
import json

import pytest

from mmdyrep.analysis.saliency import kind_counts, median, ranks, spearman, top
from tests.e2e.helpers import TINY_CLS, output, run_tool

STUDY = 'tools/analysis/saliency_study.py'


def test_helpers():
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman({'a': 1, 'b': 2, 'c': 3}, {'a': 10, 'b': 20, 'c': 30, 'x': 0}) == pytest.approx(1.0)
    assert spearman({'a': 1, 'b': 2, 'c': 3}, {'a': 3, 'b': 2, 'c': 1}) == pytest.approx(-1.0)
    assert spearman({'a': 1, 'b': 1}, {'a': 1, 'b': 2}) is None and spearman({'a': 1}, {'a': 1}) is None
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5 and median([]) is None
    assert top({'a': 1, 'b': 3, 'c': 3}, 2) == ['b', 'c']
    assert kind_counts(['a', 'b', 'z'], {'a': 'plain', 'b': 'origin'}) == {'plain': 1, 'origin': 1, 'unknown': 1}


@pytest.fixture
def imagenet_env(tmp_path):
    from mmdyrep.datasets import make_imagenet
    info = make_imagenet(tmp_path / 'imagenet', num_train_per_class=8, num_val_per_class=2)
    return {'MMDYREP_IMAGENET_ROOT': info['root']}


def test_study_on_the_tiny_classifier(tmp_path, imagenet_env):
    out = tmp_path / 'study.json'
    proc = run_tool([STUDY, TINY_CLS, '--iters', '6', '--window', '10', '--loss-check-steps', '2', '--seeds', '0',
                     '--metrics', 'taylor', 'synflow', 'synflow_conv', '--out', out], env=imagenet_env)
    with open(out) as f:
        result = json.load(f)
    text = output(proc)
    assert 'Traceback' not in text and 'Warning' not in text  # a quiet console
    assert result['default'] == 'taylor'  # the config's DyRepHook metric
    assert set(result['metrics']) == {'taylor', 'synflow', 'synflow_conv'}
    assert len(result['grown']) == 1  # one grow after the warm-up: origins and inner K×K convs compete
    kinds = result['candidate_kinds']
    assert kinds['origin'] == 1 and kinds['inner'] == 1 and kinds['plain'] == result['candidates'] - 2
    assert result['norm_modes'] == ['batch-statistics']
    for name, m in result['metrics'].items():
        assert len(m['top']) == 2 and all(1 <= len(t) <= 5 for t in m['top'])
        assert sum(m['kinds'].values()) == len(m['top'][0]) + len(m['top'][1])
        assert -1.0 <= m['spearman'] <= 1.0, name
        assert m['top1_float32'] and m['top1_float64'], name
        assert m['precision_agree'] == (m['top1_float32'] == m['top1_float64'])
        assert set(m['passes']) == {'degeneracy', 'spearman', 'precision'}
    # what the study is for, on this real run: the conv-weight score is rounding-sized under
    # training-mode BN, the OP-BN scores are not; the default ranks stably and alike in both precisions
    assert result['metrics']['synflow_conv']['degeneracy'] < 1e-4
    assert result['metrics']['synflow']['degeneracy'] >= 1e-2
    assert result['metrics']['taylor']['degeneracy'] >= 1e-2
    assert result['metrics']['taylor']['spearman'] >= 0.6
    assert result['metrics']['taylor']['precision_agree']
    check = result['loss_check']
    assert check['top'] != check['bottom'] and check['steps'] == 2 and len(check['runs']) == 1
    run = check['runs'][0]
    assert all(len(run[k]) == 2 for k in ('none', 'top', 'bottom'))
    assert 'loss check' in text and 'default taylor:' in text


def test_bad_arguments_are_named(tmp_path):
    proc = run_tool([STUDY, tmp_path / 'missing.py'], check=False)
    assert proc.returncode == 1 and 'error: config file not found' in proc.stderr
    proc = run_tool([STUDY, TINY_CLS, '--window', '0'], check=False)
    assert proc.returncode == 2 and '--window must be >= 1' in proc.stderr


def test_float64_pass_falls_back_to_the_backbone_on_the_real_detector(tmp_path):
    """mmcv's CPU NMS has no float64 kernel: the whole Faster R-CNN cannot run in float64, so the
    backbone alone does (hooks cast at its boundary) and the candidates' gradients are float64."""
    import torch
    from mmengine.runner import Runner

    from mmdyrep.core import Evolver
    from mmdyrep.analysis.saliency_study import backbone_of, precision_top1
    from tests.engine.runners import coco_cfg

    runner = Runner.from_cfg(coco_cfg(str(tmp_path / 'coco'), str(tmp_path / 'work')))
    model = runner.model
    model.init_weights()
    probe = next(iter(runner.train_dataloader))
    example = torch.zeros(1, 3, 64, 64)
    seen = {}

    def make(bb):
        dtype = next(bb.parameters()).dtype
        weight = bb.layer2[0].conv2.weight  # layer1 is frozen (frozen_stages=1)
        weight.register_hook(lambda g: seen.__setitem__(dtype, g.dtype))
        return {m: Evolver(bb, metric=m, candidate_filter=bb.is_grow_candidate, example_input=example.to(dtype))
                for m in ('taylor', 'snip')}

    r32 = precision_top1(model, probe, torch.float32, make, seed=3)
    r64 = precision_top1(model, probe, torch.float64, make, seed=3)
    assert r32['scope'] == 'model' and r32['error'] is None
    assert r64['scope'] == 'backbone' and 'Double' in r64['error']  # the whole-model failure, named
    assert seen == {torch.float32: torch.float32, torch.float64: torch.float64}
    for m in ('taylor', 'snip'):
        assert r32['top1'][m] and r64['top1'][m] == r32['top1'][m], m
    assert next(backbone_of(model).parameters()).dtype == torch.float32  # the model itself is untouched
