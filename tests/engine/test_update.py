"""engine/update.py, scoring.py and checks.py in one process: the Evolver arguments a DyRepHook passes on, the
seeded calibration iterator, the eval-output check, the single-process collectives, AMP unscaling at the
optimizer step, and the refused windows."""
import inspect

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from mmdyrep.core import DyRepError
from mmdyrep.engine.checks import check_window
from mmdyrep.engine.scoring import pending_unscale, score_at_each_step
from mmdyrep.engine.update import (EVOLVER_ARGS, calibration_loader, check_ranks, collectives, eval_features,
                                   evolver_kwargs, relative_change)


def test_evolver_kwargs_are_the_hooks_settings_that_the_evolver_takes():
    from mmdyrep.core import Evolver
    from mmdyrep.engine.dyrep_hook import DyRepHook
    hook_args = set(inspect.signature(DyRepHook.__init__).parameters)
    assert set(EVOLVER_ARGS) == hook_args & set(inspect.signature(Evolver.__init__).parameters) - {'self'}
    hook = DyRepHook(topk=2, max_depth=None, seed=5)
    assert evolver_kwargs(hook) == dict(metric=hook.metric, topk=2, branches=None, gamma_init=hook.gamma_init,
                                        dep=True, dep_threshold=hook.dep_threshold, max_depth=None, seed=5)


def test_calibration_loader_is_seeded_per_update():
    train = DataLoader(list(range(32)), batch_size=4, shuffle=True)

    def order(seed, update):
        return torch.cat(list(calibration_loader(train, seed, update))).tolist()

    assert order(0, 1) == order(0, 1) != order(0, 2)
    assert sorted(order(3, 0)) == list(range(32))


def test_eval_features_keep_the_mode_and_measure_the_change():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    x = torch.randn(2, 3, 8, 8)
    before = eval_features(net, x)
    assert net.training and before[0].dtype == torch.float32
    assert relative_change(before, eval_features(net, x)) == 0
    with torch.no_grad():
        net[1].running_mean += 1  # an eval-mode change: batch statistics would hide it
    assert relative_change(before, eval_features(net, x)) > 1e-3


def test_one_process_needs_no_collectives():
    assert collectives() == dict(all_reduce=None, broadcast=None, sync_norms=None)
    assert check_ranks(nn.Linear(2, 2), 'epoch 1') is None


class Wrapper:
    """What the hook reads of an mmengine OptimWrapper: ``optimizer`` and (AMP) ``loss_scaler``."""

    def __init__(self, optimizer, loss_scaler=None):
        self.optimizer, self.loss_scaler = optimizer, loss_scaler


def test_scores_are_recorded_unscaled_at_each_step_while_active():
    param = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler('cpu', init_scale=8.0)
    wrapper = Wrapper(opt, scaler)
    assert pending_unscale(Wrapper(opt)) is None
    seen, active = [], [True]

    class Recorder:
        def record(self, grad_scale=None):
            seen.append(None if grad_scale is None else float(grad_scale))

    handle = score_at_each_step(wrapper, Recorder(), lambda: active[0])
    scaler.scale(param.sum()).backward()
    opt.step()  # a wrapper that steps the optimizer itself: the gradients are still scaled
    scaler.unscale_(opt)
    opt.step()  # unscaled before the step, as AmpOptimWrapper does
    active[0] = False
    opt.step()
    handle.remove()
    active[0] = True
    opt.step()
    assert seen == [1 / 8, None]


@pytest.mark.parametrize('kwargs, match', [
    (dict(interval=True, begin=0, end=None), 'interval must be a positive int'),
    (dict(interval=1, begin=-1, end=None), 'begin must be an int >= 0'),
    (dict(interval=1, begin=3, end=3), r'end must be None or an int > begin \(3\)'),
])
def test_malformed_windows_are_refused(kwargs, match):
    with pytest.raises(DyRepError, match=f'^DyRepHook: {match}'):
        check_window(**kwargs)
