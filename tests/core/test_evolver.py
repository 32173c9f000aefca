"""Algorithm 1 around a hand-written loop: record, step (grow the most salient op, cut)."""
import pytest

from mmdyrep.core import DyRepBlock, DyRepError, Evolver
from .conftest import rel_err


def train_steps(model, evolver, batches):
    model.train()
    for b in batches:
        model.zero_grad()
        model(b).logsumexp(1).mean().backward()
        evolver.record()


def test_step_grows_the_most_salient_conv(resnet18, batches, image):
    evolver = Evolver(resnet18, topk=2, candidate_filter=lambda n: not n.startswith('layer4'))
    assert 'layer4.0.conv1' not in evolver.candidates()
    train_steps(resnet18, evolver, batches[:2])
    expected = evolver.scores.select(2)
    resnet18.eval()
    ref = resnet18(image)
    reduced, broadcast = [], []
    report = evolver.step(calibrate=lambda m: [m(b) for b in batches],
                          all_reduce=lambda t: reduced.append(t) or t,
                          broadcast=lambda branches: broadcast.extend(branches))
    assert list(report['grown']) == expected
    assert all(isinstance(resnet18.get_submodule(n), DyRepBlock) for n in expected)
    assert len(reduced) == 1 and len(broadcast) == sum(len(v) for v in report['grown'].values())
    assert report['cut'] == {}  # fresh branches all have gamma 0.01: no spread
    assert rel_err(resnet18(image), ref) <= 1e-5
    assert len(evolver.scores) == 0  # scores restart after a decision
    # the grown convs' origins and 1x1-KxK convs are candidates now
    assert f'{expected[0]}.origin' in evolver.candidates()
    assert f'{expected[0]}.branches.1x1_kxk.kxk' in evolver.candidates()
    # max_depth keeps nested convs out
    shallow = Evolver(resnet18, max_depth=0)
    assert f'{expected[0]}.origin' not in shallow.candidates()


def test_state_round_trip_and_bad_arguments(resnet18, batches):
    evolver = Evolver(resnet18, metric='snip')
    train_steps(resnet18, evolver, batches[:1])
    other = Evolver(resnet18, metric='snip')
    other.load_state_dict(evolver.state_dict())
    assert other.scores.select(3) == evolver.scores.select(3)
    with pytest.raises(DyRepError, match="unknown saliency metric 'synfloww'"):
        Evolver(resnet18, metric='synfloww')
    with pytest.raises(DyRepError, match='topk'):
        Evolver(resnet18, topk=0)
    with pytest.raises(DyRepError, match="unknown branch types"):
        Evolver(resnet18, branches=['5x5'])


def test_one_set_of_rules_for_the_hyper_parameters(resnet18):
    """grow, the Evolver and the hook (tests/engine) refuse the same values with the same words
    (mmdyrep.core.options), each naming who was given them."""
    from mmdyrep.core import grow
    for kwargs, words in ((dict(gamma_init=0.0), 'gamma_init must be a positive number'),
                          (dict(gamma_init=float('nan')), 'gamma_init must be a positive number'),
                          (dict(branches=['1x1', '1x1']), 'duplicate branch types'),
                          (dict(branches=[]), 'no branch types given')):
        with pytest.raises(DyRepError, match=f'Evolver: {words}'):
            Evolver(resnet18, **kwargs)
        with pytest.raises(DyRepError, match=words):
            grow(resnet18, ['layer1.0.conv1'], **kwargs)
    for kwargs, words in ((dict(dep_threshold=-1), 'dep_threshold must be a number >= 0'),
                          (dict(max_depth=-1), 'max_depth must be None or an int >= 0'),
                          (dict(topk=True), 'topk must be a positive int')):
        with pytest.raises(DyRepError, match=f'Evolver: {words}'):
            Evolver(resnet18, **kwargs)
