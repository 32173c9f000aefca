"""The benchmark scripts (``tools/analysis/training_cost.py``, ``overheads.py``) run end to end as a
user runs them, on tiny inputs, and their JSON says what the tables in docs/benchmarks.md are built
from: every mode timed, ratios to origin, structures of the stated size, targets judged against the
ratios, deploy exact. Timings themselves are not asserted (they are the benchmarks' job)."""
import json

import pytest

from tests.e2e.helpers import run_tool

TC = 'tools/analysis/training_cost.py'
COMMON = ['--repeats', '1', '--warmup', '0', '--threads', '1']


def run_json(tmp_path, script, *args) -> dict:
    out = tmp_path / 'out.json'
    run_tool([script, *args, *COMMON, '--out', out], timeout=600)
    with open(out) as f:
        result = json.load(f)
    assert result['machine']['threads'] == 1 and script in result['command']
    return result


def check_model(res: dict, modes, grown_keys):
    times = res['modes']
    assert set(times) == set(modes)
    assert times['origin']['time_ratio'] == 1.0
    for mode, r in times.items():
        assert r['median_s'] > 0 and len(r['times_s']) == 1
        assert r['time_ratio'] == pytest.approx(r['median_s'] / times['origin']['median_s'])
    for key in grown_keys:
        assert res[key], f'{key}: nothing grown'
    return res['backbone']


def check_judged(targets, results):
    assert targets
    for t in targets:
        ratio = results[t['model']]['modes'][t['mode']]['time_ratio']
        assert t['ratio'] == ratio
        limit = float(t['target'].split()[1])
        assert t['pass'] == (ratio <= limit if t['target'].startswith('<=') else ratio >= limit)


def test_training_cost_classifier_all_modes(tmp_path):
    result = run_json(tmp_path, TC, '--models', 'r18-cls', '--cls-size', '32', '32', '--cls-batch', '2',
                      '--calib-batches', '1')
    res = result['results']['r18-cls']
    modes = ['origin', 'repvgg', 'dbb', 'dyrep', 'dyrep-f', 'repvgg+fast', 'dbb+fast', 'dyrep+fast', 'dyrep-f+fast']
    backbone = check_model(res, modes, ['dyrep_grown', 'dyrep-f_grown'])
    assert res['input'] == [2, 3, 32, 32]
    assert backbone['origin']['params_ratio'] == 1.0 and backbone['origin']['blocks'] == 0
    assert backbone['repvgg']['params_ratio'] == pytest.approx(1.11, abs=0.01)  # K×K + 1×1 + residual
    assert backbone['dbb']['params_ratio'] == pytest.approx(2.31, abs=0.02)  # DBB ~2.3x on ResNet-18 (Sec. 3)
    # grown while a grow brings the ratio closer to 1.25: the last grow's step past 1.25 is smaller
    # than the gap it closed
    assert backbone['dyrep']['params_ratio'] > 1.0 and backbone['dyrep-f']['flops_ratio'] > 1.0
    assert backbone['dyrep']['blocks'] >= len(res['dyrep_grown']) > 0
    for mode in modes:
        assert res['modes'][mode]['peak_mb'] > res['modes'][mode]['state_mb'] > 0
    check_judged(result['targets'], result['results'])

    # --replay: the same grows (and cuts) as recorded, not chosen again; bad files are named
    first = tmp_path / 'first.json'
    (tmp_path / 'out.json').rename(first)
    again = run_json(tmp_path, TC, '--models', 'r18-cls', '--cls-size', '32', '32', '--cls-batch', '2',
                     '--calib-batches', '1', '--modes', 'dyrep', 'dyrep-f', '--fast', 'off', '--no-memory',
                     '--replay', first)['results']['r18-cls']
    assert set(again['modes']) == {'origin', 'dyrep', 'dyrep-f'}
    for mode in ('dyrep', 'dyrep-f'):
        assert again[f'{mode}_grown'] == res[f'{mode}_grown'] and again[f'{mode}_steps'] == res[f'{mode}_steps']
        assert again[f'{mode}_replayed_from'] == str(first)
        assert again['backbone'][mode] == backbone[mode]  # params, FLOPs, block count
    proc = run_tool([TC, '--models', 'r50-cls', '--modes', 'dyrep', '--replay', first], check=False)
    assert proc.returncode != 0 and "no 'dyrep' structure for model 'r50-cls'" in proc.stderr
    (tmp_path / 'broken.json').write_text('{"results": ')
    proc = run_tool([TC, '--models', 'r18-cls', '--replay', tmp_path / 'broken.json'], check=False)
    assert proc.returncode == 2 and 'broken.json: cannot read it' in proc.stderr


def test_training_cost_detector(tmp_path):
    result = run_json(tmp_path, TC, '--models', 'r18-det', '--modes', 'dbb', 'dyrep', '--det-size', '96', '128',
                      '--det-batch', '1', '--calib-batches', '1', '--no-memory')
    res = result['results']['r18-det']
    backbone = check_model(res, ['origin', 'dbb', 'dyrep', 'dbb+fast', 'dyrep+fast'], ['dyrep_grown'])
    # mmdet keeps frozen_stages=1: the stem and layer1 stay plain, so DBB grows layers 2-4 only
    assert 2.25 < backbone['dbb']['params_ratio'] < 2.30  # the classifier's: 2.31
    assert 'peak_mb' not in res['modes']['dbb']
    check_judged(result['targets'], result['results'])


def test_training_cost_block_and_average_modes(tmp_path):
    blocks = run_json(tmp_path, TC, '--block-shapes', '8,16,16,2', '16,3,3,1')['blocks']
    big, small = blocks['8,16,16,2'], blocks['16,3,3,1']
    for r in (big, small):
        assert min(r['plain'], r['per-branch'], r['merged']) > 0
    assert big['merged_parts'] and 'origin' in big['merged_parts']  # with eval-mode BNs: one conv
    assert not small['merged_parts']  # below MIN_POSITIONS everything runs per branch
    averages = run_json(tmp_path, TC, '--avg-shapes', '2,4,9,7,3,1', '1,3,16,16,7,2')['averages']
    assert set(averages) == {'2,4,9,7,3,1', '1,3,16,16,7,2'}
    for r in averages.values():
        assert r['avg_pool2d'] > 0 and r['branch'] > 0 and r['max_abs_diff'] < 1e-5


def test_overheads_reports_every_target(tmp_path):
    result = run_json(tmp_path, 'tools/analysis/overheads.py', '--depth', '18', '--size', '32', '32', '--batch', '2',
                      '--calib-batches', '2')
    res = result['results']
    assert res['evolved_grown'] and res['evolved_params_ratio'] > 1.0
    assert res['step_s'] > 0 and res['record_s'] > 0
    assert res['blocks'] > 0 and res['fused_convs'] > 0
    metrics = {t['metric']: t for t in result['targets']}
    assert len(metrics) == len(result['targets']) >= 4
    for t in metrics.values():
        assert t['value'] == res[t['metric']]
    # deploy keeps the evolved backbone's output (branch BNs randomised first): float32 rounding only
    errors = [t for name, t in metrics.items() if 'error' in name]
    assert errors and all(t['pass'] and t['value'] < 1e-5 for t in errors)
