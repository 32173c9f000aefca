"""Saliency metrics (paper Eq. 3-4, 11-15) against hand-computed values; accumulation and decisions."""
import json
import math

import pytest
import torch
from torch import nn

from mmdyrep.core.saliency import (METRICS, SaliencyAccumulator, grad_norm, grasp, hessian_gradient_product, snip,
                                   synflow)

W = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75], [-2.0, 1.0, 0.5]]
X = [[1.0, 2.0, -1.0], [0.5, -1.5, 3.0], [2.0, 0.0, -0.5]]


def tiny():
    """One 3x3 conv (no bias) on one 3x3 input, padding 0: y = sum(w * x), loss = y^2 / 2."""
    conv = nn.Conv2d(1, 1, 3, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(W, dtype=torch.float64).reshape(1, 1, 3, 3))
    x = torch.tensor(X, dtype=torch.float64).reshape(1, 1, 3, 3)
    loss = 0.5 * conv(x).sum()**2
    return conv, loss


def hand_values():
    """Plain-Python floats: g = y x, H = x x^T, so H g = x (y |x|^2)."""
    y = sum(W[i][j] * X[i][j] for i in range(3) for j in range(3))
    x_sq = sum(X[i][j]**2 for i in range(3) for j in range(3))
    return {
        'synflow': y * y,
        'snip': sum(abs(y * X[i][j] * W[i][j]) for i in range(3) for j in range(3)),
        'grad_norm': abs(y) * math.sqrt(x_sq),
        'grasp': -y * y * x_sq,
    }


def real_grads():
    """(weight, grad, H·g) of the tiny conv from real autograd."""
    conv, loss = tiny()
    hg, = hessian_gradient_product(loss, [conv.weight])
    conv, loss = tiny()
    loss.backward()
    return conv.weight.detach(), conv.weight.grad, hg


def test_hand_values_are_a_discriminating_case():
    v = hand_values()
    assert v['synflow'] == pytest.approx((-9.625)**2)  # y = -9.625 for W, X above (negative: |y| matters)
    assert len({round(x, 9) for x in v.values()}) == 4  # all four metrics differ
    assert v['snip'] > v['synflow']  # the products have mixed signs: snip != synflow


def test_metrics_match_hand_computed_values():
    expected = hand_values()
    w, g, hg = real_grads()
    got = {'synflow': synflow((w, g)), 'snip': snip((w, g)), 'grad_norm': grad_norm((w, g)), 'grasp': grasp((w, g), hg)}
    for name, value in expected.items():
        assert isinstance(got[name], torch.Tensor) and got[name].dim() == 0, name
        assert got[name].device == w.device and got[name].dtype == torch.float64, name
        assert got[name].item() == pytest.approx(value, rel=1e-12, abs=0), name


def test_hessian_gradient_product_matches_hand_value_and_handles_unused_params():
    y = sum(W[i][j] * X[i][j] for i in range(3) for j in range(3))
    x_sq = sum(X[i][j]**2 for i in range(3) for j in range(3))
    conv, loss = tiny()
    unused = nn.Parameter(torch.ones(2, dtype=torch.float64))
    hg, hz = hessian_gradient_product(loss, [conv.weight, unused])
    expected = torch.tensor([[X[i][j] * y * x_sq for j in range(3)] for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(hg.reshape(3, 3), expected, rtol=1e-12, atol=0)
    assert not hg.requires_grad
    assert torch.equal(hz, torch.zeros(2, dtype=torch.float64))


def test_accumulator_grasp_and_vote_from_real_autograd():
    expected = hand_values()
    w, g, hg = real_grads()
    for metric in ('synflow', 'snip', 'grad_norm', 'grasp'):
        acc = SaliencyAccumulator(metric)
        acc.update({'conv': (w, g)}, hessian_grads={'conv': hg})
        assert acc.averages()['conv'] == pytest.approx(expected[metric], rel=1e-12, abs=0), metric
    acc = SaliencyAccumulator('vote')
    acc.update({'conv': (w, g)}, hessian_grads={'conv': hg})
    per_metric = acc.metric_averages()
    assert set(per_metric) == {'synflow', 'snip', 'grad_norm', 'grasp'}
    for metric, value in expected.items():
        assert per_metric[metric]['conv'] == pytest.approx(value, rel=1e-12, abs=0), metric


def ops(**grads):
    """op name -> (weight of ones(4), grad filled with the value, or None)."""
    return {n: (torch.ones(4), None if v is None else torch.full((4, ), float(v))) for n, v in grads.items()}


def test_two_updates_average_and_own_counts():
    acc = SaliencyAccumulator('synflow')
    acc.update(ops(a=1.0, b=3.0, c=2.0))
    acc.update(ops(a=3.0, b=None, c=2.0))  # b has no grad this time: averaged over its own count
    assert acc.averages() == pytest.approx({'a': 8.0, 'b': 12.0, 'c': 8.0})
    assert acc.state_dict()['ops']['b']['counts'] == [1]
    assert acc.state_dict()['ops']['a']['counts'] == [2]
    acc.update(ops(d=0.5))  # ops may appear later (and others disappear)
    acc.update(ops(d=1.5, a=5.0))  # not the table's order: the index_add path
    assert acc.averages() == pytest.approx({'a': 12.0, 'b': 12.0, 'c': 8.0, 'd': 4.0})
    assert len(acc) == 4


def test_non_finite_update_is_not_counted():
    acc = SaliencyAccumulator('snip')
    acc.update(ops(a=1.0, b=2.0))
    acc.update(ops(a=float('inf'), b=100.0))  # one bad op: the whole update is dropped
    acc.update(ops(a=1.0, b=float('nan')))
    acc.update(ops(a=3.0, b=4.0))
    assert acc.averages() == pytest.approx({'a': 8.0, 'b': 12.0})
    assert acc.state_dict()['ops']['b']['counts'] == [2]
    fresh = SaliencyAccumulator('synflow')
    fresh.update(ops(a=float('nan')))  # an op whose only update was dropped has no score
    assert fresh.averages() == {} and len(fresh) == 0 and fresh.select(1) == []
    # vote: a non-finite score of any metric drops the update for all of them
    vote = SaliencyAccumulator('vote')
    vote.update(ops(a=1.0))
    f64 = dict(dtype=torch.float64)
    vote.update({'a': (torch.ones(4, **f64), torch.full((4, ), 1e100, **f64))})  # large but finite: counted
    vote.update({'a': (torch.full((4, ), 1e300, **f64), torch.full((4, ), 1e10, **f64))})  # g*w overflows
    per_metric = vote.metric_averages()
    assert per_metric['grad_norm']['a'] == pytest.approx((2.0 + 2e100) / 2)
    assert vote.state_dict()['ops']['a']['counts'] == [2, 2, 2, 0]


def test_select_order_ties_exclude_and_k():
    acc = SaliencyAccumulator('synflow')
    acc.update(ops(c=2.0, a=2.0, b=3.0, d=-1.0))
    assert acc.select() == ['b']
    assert acc.select(3) == ['b', 'a', 'c']  # a/c tie broken by name
    assert acc.select(10) == ['b', 'a', 'c', 'd']  # fewer than k available
    assert acc.select(2, exclude=['b']) == ['a', 'c']
    assert acc.select(2, exclude={'a', 'b'}) == ['c', 'd']
    late = SaliencyAccumulator('synflow')
    late.update(ops(c=2.0, b=3.0))
    late.update(ops(a=2.0))  # a joins later (after c in the table) with the same average as c
    assert late.select(3) == ['b', 'a', 'c']
    for bad in (0, -1):
        with pytest.raises(ValueError, match='positive'):
            acc.select(bad)
    acc.reset()
    assert len(acc) == 0 and acc.select(1) == [] and acc.averages() == {}


def test_vote_follows_the_majority():
    acc = SaliencyAccumulator('vote')
    # a: g = 1 everywhere -> synflow 4, snip 4, grad_norm 2.
    # b: large gradients that cancel in the signed sum -> synflow 0, snip 18, grad_norm ~9.06.
    # c: middling -> synflow 3, snip 3, grad_norm 1.5.
    acc.update({
        'a': (torch.ones(4), torch.full((4, ), 1.0)),
        'b': (torch.ones(4), torch.tensor([5.0, -5.0, 4.0, -4.0])),
        'c': (torch.ones(4), torch.full((4, ), 0.75)),
    })
    per_metric = acc.metric_averages()
    assert set(per_metric) == {'synflow', 'snip', 'grad_norm'}  # no hessian_grads: grasp does not vote
    assert max(per_metric['synflow'], key=per_metric['synflow'].get) == 'a'  # synflow alone would pick a
    assert acc.select(1) == ['b']
    assert acc.averages() == {'a': 1.0, 'b': 2.0, 'c': 0.0}
    # k=2: synflow votes a, c; snip and grad_norm vote b, a -> a 3, b 2, c 1
    assert acc.votes(2) == {'a': 3, 'b': 2, 'c': 1}
    assert acc.select(2) == ['a', 'b']
    # excluded ops get no votes: the metrics' votes move to the next op
    assert acc.votes(1, exclude=['b']) == {'a': 3, 'c': 0}
    assert acc.select(1, exclude=['b']) == ['a']


def test_vote_ties_broken_by_synflow_then_name():
    acc = SaliencyAccumulator('vote')
    # synflow: z (4) > b (0); snip: b (18) > z (4); grad_norm: b (9.06) > z (2). With k=2 every metric
    # votes for both -> 3 votes each: synflow breaks the tie.
    acc.update({
        'b': (torch.ones(4), torch.tensor([5.0, -5.0, 4.0, -4.0])),
        'z': (torch.ones(4), torch.full((4, ), 1.0)),
    })
    assert acc.votes(2) == {'b': 3, 'z': 3}
    assert acc.select(2) == ['z', 'b']  # z has the higher synflow (4 > 0) though 'b' < 'z'
    same = SaliencyAccumulator('vote')
    same.update(ops(y=1.0, x=1.0))
    assert same.select(2) == ['x', 'y']  # full tie: by name


def test_grasp_votes_only_when_given():
    acc = SaliencyAccumulator('vote')
    acc.update(ops(a=1.0, b=2.0), hessian_grads={'a': torch.full((4, ), -5.0), 'b': torch.full((4, ), 1.0)})
    acc.update(ops(a=1.0, b=2.0))  # no hessian this time: grasp keeps its own count
    per_metric = acc.metric_averages()
    assert per_metric['grasp'] == pytest.approx({'a': 20.0, 'b': -4.0})
    assert acc.state_dict()['ops']['a']['counts'] == [2, 2, 2, 1]
    assert acc.votes(1) == {'a': 1, 'b': 3}
    with pytest.raises(ValueError, match=r"'vote' needs hessian_grads.*\['b'\]"):
        acc.update(ops(a=1.0, b=2.0), hessian_grads={'a': torch.ones(4)})


def test_random_is_reproducible():

    def run(seed, reset=False):
        acc = SaliencyAccumulator('random', seed=seed)
        for _ in range(3):
            acc.update(ops(a=1, b=1, c=1, d=1))
        first = acc.averages()
        if reset:
            acc.reset()
            acc.update(ops(a=1, b=1, c=1, d=1))
            return first, acc.averages()
        return first

    a, b = run(0), run(0)
    assert a == b and set(a) == {'a', 'b', 'c', 'd'}
    assert all(0.0 <= v < 1.0 for v in a.values())
    assert len(set(a.values())) == 4
    assert run(0) != run(1)
    first, after_reset = run(0, reset=True)
    assert after_reset != {n: v for n, v in first.items()}  # reset keeps drawing, not repeating
    # ops without grad draw nothing and are not scored
    acc = SaliencyAccumulator('random')
    acc.update(ops(a=1, b=None))
    assert set(acc.averages()) == {'a'}


@pytest.mark.parametrize('in_place', [True, False])
def test_reduce_is_one_collective_and_keeps_averages(in_place):
    acc = SaliencyAccumulator('vote')
    acc.update(ops(b=2.0, c=1.0), hessian_grads={'b': torch.ones(4), 'c': torch.ones(4)})
    acc.update(ops(c=3.0, b=None))
    acc.update(ops(a=1.0, c=1.0))  # a added after b, c: table order != sorted order (repacked)
    before = acc.metric_averages()
    select_before = acc.select(2)
    calls = []

    def fake_all_reduce(t):  # two identical ranks
        calls.append(t.clone())
        if in_place:
            t.mul_(2)
            return None
        return t * 2

    acc.reduce_(fake_all_reduce)
    assert len(calls) == 1
    assert calls[0].dim() == 1 and calls[0].numel() == 3 * 4 * 4  # 3 ops x 4 metrics x (sum, count, |sum|, terms)
    after = acc.metric_averages()
    assert set(after) == set(before)
    for metric in before:
        assert after[metric] == pytest.approx(before[metric], rel=1e-12)
    assert acc.select(2) == select_before
    state = acc.state_dict()
    assert list(state['ops']) == ['a', 'b', 'c']
    assert state['ops']['c']['counts'] == [6, 6, 6, 2]
    assert state['ops']['b']['counts'] == [2, 2, 2, 2]
    assert state['ops']['a']['counts'] == [2, 2, 2, 0]
    # further updates still land on the right ops after the repacking
    acc.update(ops(a=100.0))
    assert acc.metric_averages()['synflow']['a'] == pytest.approx((8.0 + 400.0) / 3)
    assert acc.metric_averages()['synflow']['c'] == pytest.approx(before['synflow']['c'])


def test_reduce_with_nothing_accumulated_does_not_call():
    calls = []
    SaliencyAccumulator().reduce_(lambda t: calls.append(t))
    assert calls == []


@pytest.mark.parametrize('metric', ['random', 'vote', 'synflow'])
def test_state_dict_round_trip(metric):
    acc = SaliencyAccumulator(metric, seed=3)
    acc.update(ops(b=1, a=2, c=0.5))
    acc.update(ops(a=1, c=None))
    text = json.dumps(acc.state_dict())
    state = json.loads(text)
    assert state['metric'] == metric and isinstance(state['generator_state'], list)
    other = SaliencyAccumulator(metric, seed=99)
    other.load_state_dict(state)
    assert json.dumps(other.state_dict()) == text
    assert other.averages() == acc.averages()
    assert other.metric_averages() == acc.metric_averages()
    assert other.select(2) == acc.select(2) and len(other) == len(acc) == 3
    acc.update(ops(a=1, b=1, c=1))
    other.update(ops(a=1, b=1, c=1))  # the generator continues identically
    assert other.averages() == acc.averages()
    wrong = 'snip' if metric != 'snip' else 'synflow'
    with pytest.raises(ValueError, match=f"saved with metric '{metric}'"):
        SaliencyAccumulator(wrong).load_state_dict(state)


def test_bad_metric_and_grasp_without_hessian():
    with pytest.raises(ValueError, match="unknown saliency metric 'synflo'") as info:
        SaliencyAccumulator('synflo')
    for name in METRICS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="'grasp' needs hessian_grads"):
        SaliencyAccumulator('grasp').update(ops(a=1.0))
    with pytest.raises(ValueError, match=r"'grasp' needs hessian_grads.*\['b'\]"):
        SaliencyAccumulator('grasp').update(ops(a=1.0, b=1.0), hessian_grads={'a': torch.ones(4)})
    acc = SaliencyAccumulator('grasp')
    acc.update(ops(a=1.0, b=None), hessian_grads={'a': torch.full((4, ), 2.0)})  # b: no grad, no hessian needed
    assert acc.averages() == {'a': -8.0}


# ---------------------------------------------------------------- OP-BN (conv + train-mode BN)
EPS = 1e-5
GAMMA, BETA = [1.5, -0.7], [0.2, 0.3]
COEF = [[1.0, -2.0], [0.5, 1.5], [-1.0, 0.25], [2.0, -0.5]]  # loss = sum_n,c COEF[n][c] * z[n][c]


def op_bn_model():
    """conv (2 -> 2 channels, 3x3, no padding) on four 2x3x3 inputs, then a training-mode BN; a linear loss."""
    g = torch.Generator().manual_seed(5)
    conv = nn.Conv2d(2, 2, 3, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64))
    bn = nn.BatchNorm2d(2, eps=EPS).double().train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(GAMMA, dtype=torch.float64))
        bn.bias.copy_(torch.tensor(BETA, dtype=torch.float64))
    x = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    return nn.Sequential(conv, bn), x


def op_bn_hand_values(model, x):
    """Every metric in plain Python floats: BN forward and backward written out (biased variance)."""
    w = model[0].weight.detach().tolist()
    xs = x.tolist()
    n_samples = len(xs)
    y = [[sum(w[c][i][a][b] * xs[n][i][a][b] for i in range(2) for a in range(3) for b in range(3)) for c in range(2)]
         for n in range(n_samples)]
    out = {'g_w': [], 'g_gamma': [], 'g_beta': [], 'shadow': 0.0, 'loss': 0.0, 'channel': []}
    for c in range(2):
        ys = [y[n][c] for n in range(n_samples)]
        mu = sum(ys) / n_samples
        var = sum((v - mu)**2 for v in ys) / n_samples
        sigma = math.sqrt(var + EPS)
        yhat = [(v - mu) / sigma for v in ys]
        coef = [COEF[n][c] for n in range(n_samples)]
        z = [GAMMA[c] * h + BETA[c] for h in yhat]
        g_gamma, g_beta = sum(k * h for k, h in zip(coef, yhat)), sum(coef)
        mean_c, mean_ch = sum(coef) / n_samples, sum(k * h for k, h in zip(coef, yhat)) / n_samples
        g_y = [GAMMA[c] / sigma * (coef[n] - mean_c - yhat[n] * mean_ch) for n in range(n_samples)]
        out['g_w'].append([[[sum(g_y[n] * xs[n][i][a][b] for n in range(n_samples)) for b in range(3)]
                            for a in range(3)] for i in range(2)])
        out['g_gamma'].append(g_gamma)
        out['g_beta'].append(g_beta)
        out['channel'].append(g_gamma * GAMMA[c] + g_beta * BETA[c])  # = sum_n coef * z: the op's output
        out['loss'] += sum(k * v for k, v in zip(coef, z))
        out['shadow'] += EPS / (var + EPS) * g_gamma * GAMMA[c]  # what scaling the conv alone does
    flat_gw = [v for c in out['g_w'] for i in c for a in i for v in a]
    flat_w = [v for c in w for i in c for a in i for v in a]
    conv_abs = sum(abs(g * v) for g, v in zip(flat_gw, flat_w))
    norm_abs = sum(abs(out['g_gamma'][c] * GAMMA[c]) + abs(out['g_beta'][c] * BETA[c]) for c in range(2))
    return {
        'synflow': sum(out['channel']),
        'synflow_conv': out['shadow'],
        'taylor': sum(v * v for v in out['channel']),
        'snip': conv_abs + norm_abs,
        'grad_norm': math.sqrt(sum(g * g for g in flat_gw) + sum(g * g for g in out['g_gamma'] + out['g_beta'])),
        'loss': out['loss'],
        'conv_abs': conv_abs,
    }


def test_op_bn_metrics_match_hand_computed_values():
    from mmdyrep.core import Evolver
    model, x = op_bn_model()
    hand = op_bn_hand_values(model, x)
    loss = (model(x)[:, :, 0, 0] * torch.tensor(COEF, dtype=torch.float64)).sum()
    assert loss.item() == pytest.approx(hand['loss'], rel=1e-12)
    loss.backward()
    evolver = Evolver(model, example_input=x)
    op = evolver.ops()['0']  # the conv, with the BN found by tracing
    assert op.invariant and [p for p, _ in op.norm] == [model[1].weight, model[1].bias]
    from mmdyrep.core.saliency import synflow_conv, taylor
    got = {'synflow': synflow(op), 'synflow_conv': synflow_conv(op), 'taylor': taylor(op), 'snip': snip(op),
           'grad_norm': grad_norm(op)}
    for name, value in got.items():
        assert value.dtype == torch.float64 and value.dim() == 0, name
        # synflow_conv is the eps-shadow: in float64 it is exact to ~1e-16 of the conv terms it sums
        tol = 1e-9 * hand['conv_abs'] if name == 'synflow_conv' else 1e-10 * abs(hand[name])
        assert value.item() == pytest.approx(hand[name], rel=0, abs=tol), name
    # Eq. 4 over the whole operation is the first-order effect of scaling its output: for a loss linear
    # in the output, the loss itself
    assert got['synflow'].item() == pytest.approx(hand['loss'], rel=1e-10)
    assert abs(hand['synflow_conv']) < 1e-4 * abs(hand['synflow'])  # the eps-shadow is tiny


def test_degeneracy_of_synflow_conv_and_not_of_synflow(resnet18, batches):
    """On a ResNet-18 with training-mode BN: the conv-weight score cancels to rounding, the OP-BN one does not."""
    from mmdyrep.core import Evolver
    resnet18.train()
    evolvers = {m: Evolver(resnet18, metric=m) for m in ('synflow', 'synflow_conv', 'taylor', 'snip')}
    g = torch.Generator().manual_seed(3)
    for x in batches:
        resnet18.zero_grad()
        nn.functional.cross_entropy(resnet18(x), torch.randint(0, 10, (len(x), ), generator=g)).backward()
        for evolver in evolvers.values():
            evolver.record()
    median = {m: sorted(e.scores.degeneracy().values())[8] for m, e in evolvers.items()}
    assert len(evolvers['synflow'].scores.degeneracy()) == 17
    assert median['synflow_conv'] < 1e-4, median
    assert median['synflow'] > 1e-2, median
    assert median['taylor'] > 1e-2 and median['snip'] == pytest.approx(1.0), median


def test_without_a_norm_synflow_is_the_conv_score_and_running_bn_adds_its_terms():
    model, x = op_bn_model()
    loss = (model(x)[:, :, 0, 0] * torch.tensor(COEF, dtype=torch.float64)).sum()
    loss.backward()
    w, gw = model[0].weight, model[0].weight.grad
    bn = model[1]
    from mmdyrep.core.saliency import Operation, synflow_conv
    alone = Operation([(w, gw)])
    assert synflow(alone).item() == synflow_conv(alone).item() == synflow((w, gw)).item()
    running = Operation([(w, gw)], [(bn.weight, bn.weight.grad), (bn.bias, bn.bias.grad)], invariant=False)
    expected = (gw * w).sum() + (bn.weight.grad * bn.weight).sum() + (bn.bias.grad * bn.bias).sum()
    assert synflow(running).item() == pytest.approx(expected.item(), rel=1e-12)
