"""engine/report.py and the history file of core/history.py: the record of a backbone, the update's log
lines and scalars, the one degeneracy warning, and a history file that analysis reads back."""
import json

import torch
from torch import nn

from mmdyrep.analysis.history import load_history
from mmdyrep.core import extract_structure, grow
from mmdyrep.core.history import HISTORY_FILE, make_history, write_history
from mmdyrep.engine.report import (DEGENERATE_RATIO, backbone_record, degeneracy_warning, top_scores, update_lines,
                                   update_scalars)
from mmdyrep.models.complexity import count, deployed_count

SHAPE = (3, 16, 16)


def small_backbone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
    return model.eval()


def test_backbone_record_and_history_file_read_back(tmp_path):
    backbone = small_backbone()
    deployed = count(backbone, SHAPE)
    records = [backbone_record(backbone, SHAPE, 0, 0, {}, {}, deployed=deployed)]
    blocks = grow(backbone, ['3'], ['1x1'], calibrate=lambda m: m(torch.randn(2, *SHAPE)))
    grown = {n: list(b.branches) for n, b in blocks.items()}
    records.append(backbone_record(backbone, SHAPE, 10, 1, grown, {}, change=1e-7))
    last = records[-1]
    assert list(last) == ['iter', 'epoch', 'grown', 'cut', 'params', 'flops', 'deployed_params', 'deployed_flops',
                          'eval_change', 'structure', 'importances']
    assert last['params'] == sum(p.numel() for p in backbone.parameters()) > records[0]['params']
    assert records[0]['deployed_params'] == deployed['params']  # given (the hook counts once per run)
    assert last['deployed_params'] == deployed_count(backbone, SHAPE)['params']  # else counted
    assert last['structure'] == extract_structure(backbone) and set(last['importances']) == {'3'}
    history = make_history(records, True, 20, 2, SHAPE)
    path = str(tmp_path / HISTORY_FILE)
    write_history(path, history)
    assert not (tmp_path / (HISTORY_FILE + '.tmp')).exists()
    assert open(path).read() == json.dumps(history)
    assert load_history(str(tmp_path)) == json.loads(json.dumps(history))


def report(ratios, modes, scores=None, kinds=None):
    return {'degeneracy': ratios, 'norm_modes': modes, 'scores': scores or {}, 'kinds': kinds or {},
            'grown': {'a': ['1x1', 'residual']}, 'cut': {}}


def test_degeneracy_warning_only_for_most_candidates():
    tiny = DEGENERATE_RATIO / 10
    assert degeneracy_warning('taylor', report({}, {})) is None
    assert degeneracy_warning('taylor', report({'a': tiny, 'b': 1.0}, {'a': 'batch-statistics'})) is None
    text = degeneracy_warning('synflow_conv', report({'a': tiny, 'b': tiny, 'c': 1.0},
                                                     {'a': 'batch-statistics', 'b': 'running-statistics'}))
    assert text.startswith("metric 'synflow_conv' is numerically degenerate for 2 of 3 candidates")
    assert 'batch-statistics/running-statistics mode' in text and "use metric='synflow'" in text
    text = degeneracy_warning('taylor', report({'a': tiny}, {'a': 'running-statistics'}))
    assert text.endswith('not by the loss. ')


def test_top_scores_and_update_lines():
    scores = {'synflow': {'a': 3.0, 'b': 1.0}, 'taylor': {'b': 2.0}}
    rep = report({}, {}, scores, {'a': 'plain'})
    assert top_scores(rep, 'vote') == 'a 3.000e+00 (plain), b 1.000e+00 (?)'
    assert top_scores(rep, 'taylor') == 'b 2.000e+00 (?)'
    assert top_scores(rep, 'snip') == 'none'
    records = [{'iter': 0, 'params': 1e6, 'flops': 1e9, 'deployed_params': 1e6, 'deployed_flops': 1e9,
                'eval_change': None},
               {'iter': 10, 'params': 2e6, 'flops': 3e9, 'deployed_params': 1e6, 'deployed_flops': 1e9,
                'eval_change': 2e-7}]
    lines = update_lines(records, rep, 'vote', 'update 1 at iter 10', ['x', 'y'], 1, 0.25)
    assert lines == [
        'update 1 at iter 10: top-5 by vote (synflow shown): a 3.000e+00 (plain), b 1.000e+00 (?)',
        'update 1 at iter 10: grew a <- [1x1 residual]; cut nothing; optimizer +2/-1 params, eval-output change '
        '2.0e-07; 0.2s',
        'backbone now 2.00M params, 3.00 GFLOPs (average so far 1.00M, 1.00 G; deployed 1.00M, 1.00 G)']
    assert update_scalars(records, 4) == {'dyrep/params': 2e6, 'dyrep/flops': 3e9, 'dyrep/avg_params': 1e6,
                                          'dyrep/avg_flops': 1e9, 'dyrep/blocks': 4, 'dyrep/eval_change': 2e-7}
    assert 'dyrep/eval_change' not in update_scalars(records[:1], 0)
