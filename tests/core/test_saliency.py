"""Saliency metrics (Eq. 3-4, 11-15) against hand-computed values; accumulation and decisions."""
import json
import math

import pytest
import torch
from torch import nn

from mmdyrep.core.saliency import (SaliencyAccumulator, grad_norm, grasp, hessian_gradient_product, snip,
                                   synflow)

W = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75], [-2.0, 1.0, 0.5]]
X = [[1.0, 2.0, -1.0], [0.5, -1.5, 3.0], [2.0, 0.0, -0.5]]


def tiny():
    """One 3x3 conv on one 3x3 input (padding 0): y = sum(w * x), loss = y^2 / 2."""
    conv = nn.Conv2d(1, 1, 3, bias=False).double()
    conv.weight.data.copy_(torch.tensor(W, dtype=torch.float64).reshape(1, 1, 3, 3))
    x = torch.tensor(X, dtype=torch.float64).reshape(1, 1, 3, 3)
    loss = 0.5 * conv(x).sum()**2
    return conv, loss


def hand_values():
    y = sum(W[i][j] * X[i][j] for i in range(3) for j in range(3))
    x_sq = sum(X[i][j]**2 for i in range(3) for j in range(3))
    return {
        'synflow': y * y,  # sum(g * w) with g = y x
        'snip': sum(abs(y * X[i][j] * W[i][j]) for i in range(3) for j in range(3)),
        'grad_norm': abs(y) * math.sqrt(x_sq),
        'grasp': -y * y * x_sq,  # H g = x (x . g) = x y |x|^2
    }


def test_metrics_match_hand_computed_values():
    expected = hand_values()
    conv, loss = tiny()
    hg, = hessian_gradient_product(loss, [conv.weight])
    conv, loss = tiny()
    loss.backward()
    w, g = conv.weight.detach(), conv.weight.grad
    got = {'synflow': synflow(w, g), 'snip': snip(w, g), 'grad_norm': grad_norm(w, g), 'grasp': grasp(w, hg)}
    for name, value in expected.items():
        assert got[name].dim() == 0
        assert got[name].item() == pytest.approx(value, rel=1e-12), name
    assert expected['synflow'] != expected['snip']  # the case distinguishes them


def ops(**grads):
    return {n: (torch.ones(4), torch.full((4, ), float(v)) if v is not None else None) for n, v in grads.items()}


def test_accumulate_average_and_select():
    acc = SaliencyAccumulator('synflow')
    acc.update(ops(a=1.0, b=3.0, c=2.0))
    acc.update(ops(a=3.0, b=None, c=2.0))  # b has no grad this time: its own count
    avg = acc.averages()
    assert avg == pytest.approx({'a': 8.0, 'b': 12.0, 'c': 8.0})
    assert acc.select(1) == ['b']
    assert acc.select(3) == ['b', 'a', 'c']  # a/c tie broken by name
    assert acc.select(2, exclude=['b']) == ['a', 'c']
    acc.update(ops(a=float('inf'), b=1.0, c=1.0))  # a non-finite update is not counted at all
    assert acc.averages() == pytest.approx({'a': 8.0, 'b': 12.0, 'c': 8.0})
    with pytest.raises(ValueError, match='positive'):
        acc.select(0)
    acc.reset()
    assert len(acc) == 0 and acc.select(1) == []


def test_vote_follows_the_majority():
    acc = SaliencyAccumulator('vote')
    # synflow (sum g*w) prefers 'a' (large positive sum); snip and grad_norm prefer 'b' (large
    # magnitudes that cancel in the signed sum)
    acc.update({'a': (torch.ones(4), torch.full((4, ), 1.0)),
                'b': (torch.ones(4), torch.tensor([5.0, -5.0, 4.0, -4.0]))})
    per_metric = acc.metric_averages()
    assert max(per_metric['synflow'], key=per_metric['synflow'].get) == 'a'
    assert acc.select(1) == ['b']
    assert acc.averages() == {'a': 1.0, 'b': 2.0}


def test_random_is_reproducible():
    def run(seed):
        acc = SaliencyAccumulator('random', seed=seed)
        for _ in range(3):
            acc.update(ops(a=1, b=1, c=1, d=1))
        return acc.averages()

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_reduce_is_one_collective_and_keeps_averages():
    acc = SaliencyAccumulator('vote')
    acc.update(ops(a=1.0, b=2.0))
    acc.update(ops(a=3.0, b=None))
    before = acc.metric_averages()
    calls = []

    def fake_all_reduce(t):  # two identical ranks
        calls.append(t.shape)
        t.mul_(2)
        return t

    acc.reduce_(fake_all_reduce)
    assert len(calls) == 1
    after = acc.metric_averages()
    for metric in before:
        assert after[metric] == pytest.approx(before[metric])
    assert acc.state_dict()['counts'] == {'a': 4.0, 'b': 2.0}


def test_state_dict_round_trip():
    acc = SaliencyAccumulator('random', seed=3)
    acc.update(ops(a=1, b=1))
    state = json.loads(json.dumps(acc.state_dict()))
    other = SaliencyAccumulator('random', seed=99)
    other.load_state_dict(state)
    assert other.averages() == acc.averages()
    acc.update(ops(a=1, b=1))
    other.update(ops(a=1, b=1))  # the generator continues identically
    assert other.averages() == acc.averages()
    with pytest.raises(ValueError, match="saved with metric 'random'"):
        SaliencyAccumulator('synflow').load_state_dict(state)


def test_bad_metric_and_grasp_without_hessian():
    with pytest.raises(ValueError, match="unknown saliency metric 'synflo'"):
        SaliencyAccumulator('synflo')
    with pytest.raises(ValueError, match="'grasp' needs hessian_grads"):
        SaliencyAccumulator('grasp').update(ops(a=1.0))
    acc = SaliencyAccumulator('grasp')
    acc.update(ops(a=1.0), hessian_grads={'a': torch.full((4, ), 2.0)})
    assert acc.averages() == {'a': -8.0}
