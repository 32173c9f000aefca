"""Structure histories: loading and validation, the training average of Tables 2-3, the summary.

The history is made from real grows and cuts on a real DyRepResNet-18 (mmpretrain) through the
core API, in the format DyRepHook writes."""
import json

import pytest
import torch

from mmdyrep.analysis.history import (HISTORY_FILE, HistoryError, flatten_structure, format_summary,
                                      grown_conv, history_from_records, load_history, summary, time_average,
                                      training_average)
from mmdyrep.core import cut_branches, grow, iter_blocks
from mmdyrep.core.history import make_history

INPUT = (3, 64, 64)


def _record(backbone, it, epoch, grown, cut, deployed):
    from mmdyrep.engine.report import backbone_record  # the record DyRepHook writes
    return backbone_record(backbone, INPUT, it, epoch, grown, cut, deployed=deployed)


def make_run(seed=0):
    """(backbone, history): 3 updates on a DyRepResNet-18 (stride-2 conv, a nested 1x1-KxK, a grown
    origin, one cut), 400 iterations = 4 epochs; branch gammas randomised so importances differ."""
    from mmdyrep.models.complexity import count
    from mmdyrep.models.mmpretrain_resnet import DyRepResNet
    torch.manual_seed(seed)
    backbone = DyRepResNet(depth=18)
    backbone.eval()  # (mmpretrain's ResNet.train returns None)
    x = torch.randn(2, *INPUT)
    calibrate = lambda m: m(x)  # noqa: E731
    deployed = count(backbone, INPUT)
    records = [_record(backbone, 0, 0, {}, {}, deployed)]

    def randomise():
        g = torch.Generator().manual_seed(len(records))
        with torch.no_grad():
            for _, block in iter_blocks(backbone):
                for branch in block.branches.values():
                    w = branch.last_norm.weight
                    if float(w.abs().mean()) == pytest.approx(0.01):
                        w.copy_(torch.rand(w.shape, generator=g) * 0.2)

    blocks = grow(backbone, ['layer4.0.conv1'], calibrate=calibrate)
    randomise()
    records.append(_record(backbone, 100, 1, {n: list(b.branches) for n, b in blocks.items()}, {}, deployed))
    blocks = grow(backbone, ['layer3.1.conv2', 'layer4.0.conv1.branches.1x1_kxk.kxk'], calibrate=calibrate)
    randomise()
    cut_branches(backbone, 'layer4.0.conv1', ['1xk'])
    records.append(_record(backbone, 200, 2, {n: list(b.branches) for n, b in blocks.items()},
                           {'layer4.0.conv1': ['1xk']}, deployed))
    blocks = grow(backbone, ['layer3.1.conv2.origin'], ['1x1', 'residual'], calibrate=calibrate)
    randomise()
    records.append(_record(backbone, 300, 3, {n: list(b.branches) for n, b in blocks.items()}, {}, deployed))
    return backbone, make_history(records, True, 400, 4, INPUT)


@pytest.fixture(scope='module')
def run():
    return make_run()


def write(tmp_path, history):
    (tmp_path / HISTORY_FILE).write_text(json.dumps(history))
    return str(tmp_path)


def test_load_from_work_dir_and_file(run, tmp_path):
    _, history = run
    work_dir = write(tmp_path, history)
    assert load_history(work_dir) == history
    assert load_history(str(tmp_path / HISTORY_FILE)) == history


def test_training_average_is_time_weighted(run):
    _, history = run
    p = [r['params'] for r in history['records']]
    assert len(set(p)) == 4  # every update changed the params
    assert training_average(history, 'params') == pytest.approx(sum(p) * 100 / 400)
    f = [r['flops'] for r in history['records']]
    assert training_average(history, 'flops') == pytest.approx(sum(f) / 4)
    assert training_average(history, 'deployed_params') == history['records'][0]['deployed_params']


def test_time_average_by_hand():
    records = [{'iter': 0, 'v': 100}, {'iter': 500, 'v': 200}, {'iter': 900, 'v': 50}]
    assert time_average(records, 'v', 1000) == pytest.approx((100 * 500 + 200 * 400 + 50 * 100) / 1000)
    assert time_average(records, 'v', 600) == pytest.approx((100 * 500 + 200 * 100) / 600)  # so far, at 600
    assert time_average(records, 'v', 0) == 100
    # a first record after 0 is the start state: it holds from 0
    assert time_average([{'iter': 100, 'v': 3}, {'iter': 300, 'v': 5}], 'v', 400) == pytest.approx(
        (3 * 300 + 5 * 100) / 400)
    # two updates at the same iteration: the later one counts
    assert time_average([{'iter': 0, 'v': 1}, {'iter': 200, 'v': 7}, {'iter': 200, 'v': 3}], 'v', 400) == \
        pytest.approx((1 * 200 + 3 * 200) / 400)
    with pytest.raises(HistoryError):
        time_average([], 'v', 10)


def test_summary(run):
    backbone, history = run
    info = summary(history)
    assert info['num_updates'] == 3
    assert [(g['conv'], g['iter'], g['epoch']) for g in info['grown']] == [
        ('layer4.0.conv1', 100, 1), ('layer3.1.conv2', 200, 2), ('layer4.0.conv1.branches.1x1_kxk.kxk', 200, 2),
        ('layer3.1.conv2.origin', 300, 3)]
    assert 'residual' not in info['grown'][0]['branches']  # stride 2
    assert info['cut'] == [{'block': 'layer4.0.conv1', 'iter': 200, 'epoch': 2, 'branches': ['1xk']}]
    assert info['blocks_now'] == {n: list(b.branches) for n, b in iter_blocks(backbone)}
    assert info['now']['params'] == sum(p.numel() for p in backbone.parameters())
    assert info['average']['params'] == training_average(history, 'params')
    assert info['average_vs_deployed']['params'] > 1
    text = format_summary(info)
    assert 'epoch 2 (iter 200): cut layer4.0.conv1 -x 1xk' in text
    assert 'grew layer3.1.conv2.origin <- 1x1, residual' in text


def test_flatten_structure_matches_the_model(run):
    backbone, history = run
    flat = flatten_structure(history['records'][-1]['structure'])
    assert flat == {n: list(b.branches) for n, b in iter_blocks(backbone)}
    assert grown_conv('layer3.1.conv2.origin') == 'layer3.1.conv2'
    assert grown_conv('layer4.0.conv1.branches.1x1_kxk.kxk') == 'layer4.0.conv1'


@pytest.mark.parametrize('corrupt, message', [
    (lambda h: h.update(format='mmdyrep.structure'), "format is 'mmdyrep.structure'"),
    (lambda h: h.update(version=2), 'unsupported history version 2'),
    (lambda h: h.pop('max_iters'), "missing key 'max_iters'"),
    (lambda h: h.update(records=[]), 'records must be a non-empty list'),
    (lambda h: h['records'][2].update(iter=50), 'records[2].iter is 50, before the previous record (100)'),
    (lambda h: h['records'][3].update(iter=401), 'past max_iters (400)'),
    (lambda h: h['records'][1].pop('flops'), "records[1] has no 'flops'"),
    (lambda h: h['records'][1].update(params='many'), 'records[1].params must be a number'),
    (lambda h: h['records'][1].update(grown={'layer1.0.conv1': '1x1'}), "records[1].grown['layer1.0.conv1']"),
    (lambda h: h['records'][1].update(structure={'blocks': {}}), 'records[1].structure is not'),
])
def test_bad_history_names_file_and_problem(run, tmp_path, corrupt, message):
    history = json.loads(json.dumps(run[1]))
    corrupt(history)
    work_dir = write(tmp_path, history)
    with pytest.raises(HistoryError) as e:
        load_history(work_dir)
    assert str(tmp_path / HISTORY_FILE) in str(e.value)
    assert message in str(e.value)


def test_corrupt_or_missing_file(run, tmp_path):
    text = json.dumps(run[1])
    (tmp_path / HISTORY_FILE).write_text(text[:len(text) // 2])  # truncated mid-write
    with pytest.raises(HistoryError, match=r'dyrep_history.json: not valid JSON .* truncated or corrupt'):
        load_history(str(tmp_path))
    (tmp_path / HISTORY_FILE).write_bytes(b'\xff\xfe\x00garbage')
    with pytest.raises(HistoryError, match='corrupt'):
        load_history(str(tmp_path))
    with pytest.raises(HistoryError, match=r"missing.json' does not exist"):
        load_history(str(tmp_path / 'missing.json'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(HistoryError, match=r"work dir .*empty' has no dyrep_history.json"):
        load_history(str(tmp_path / 'empty'))


def test_history_from_checkpoint_records(run):
    records = run[1]['records']
    history = history_from_records(records, 400, source='ckpt.pth')
    assert training_average(history, 'params') == training_average(run[1], 'params')
    with pytest.raises(HistoryError, match='ckpt.pth: records.3..iter is 300, past max_iters .250.'):
        history_from_records(records, 250, source='ckpt.pth')
