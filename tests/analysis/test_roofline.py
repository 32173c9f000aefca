"""mmdyrep.analysis.roofline: the step-time model and its fit."""
import json
import math
import random

import pytest
import torch
from torch import nn

from mmdyrep.analysis import roofline
from mmdyrep.analysis.ops import train_step_counts
from tests.e2e.helpers import run_tool


def test_step_time_adds_bytes_arithmetic_and_launches():
    c = roofline.Costs(bytes=1000.0, macs=4000.0, kernels=3)
    machine = roofline.Machine(balance=20.0, launch_bytes=50.0)
    assert roofline.step_time(c, machine) == 1000 + 200 + 150
    base = roofline.Costs(500.0, 4000.0, 1)
    assert roofline.ratio(c, base, machine) == pytest.approx(1350 / 750)


def test_floor_model_charges_each_kernel_the_longer_of_a_launch_and_its_work():
    c = roofline.Costs(bytes=1110.0, macs=4000.0, kernels=3, launches=((10, 0), (100, 0), (1000, 4000)))
    machine = roofline.Machine(balance=20.0, launch_bytes=50.0)
    assert roofline.floor_time(c, machine) == 50 + 100 + (1000 + 200)
    assert roofline.ratio(c, c, machine, 'floor') == 1.0
    with pytest.raises(ValueError, match='every kernel counted'):
        roofline.floor_time(roofline.Costs(1.0, 1.0, 1), machine)
    with pytest.raises(ValueError, match="unknown model 'max'"):
        roofline.fit([(c, c, 1.0)], model='max')


def test_floor_fit_recovers_the_machine_that_made_the_ratios():
    """Steps of long and short kernels: the floor model's ratios, fit back by the floor model (and not by the
    sum model, whose launches cost the same next to long kernels and short ones)."""
    truth = roofline.Machine(balance=40.0, launch_bytes=2e6)
    rng = random.Random(0)

    def step(long_kernels, short_kernels):
        launches = tuple((int(rng.uniform(1e7, 1e8)), int(rng.uniform(1e8, 1e10))) for _ in range(long_kernels))
        launches += tuple((int(rng.uniform(1e4, 1e6)), 0) for _ in range(short_kernels))
        return roofline.Costs(sum(b for b, _ in launches), sum(m for _, m in launches), len(launches), launches)

    obs = []
    for _ in range(10):
        base = step(rng.randint(20, 40), rng.randint(50, 100))
        c = step(rng.randint(20, 60), rng.randint(50, 600))
        obs.append((c, base, roofline.ratio(c, base, truth, 'floor')))
    machine, rms = roofline.fit(obs, n=61, model='floor')
    assert rms < 0.02
    assert abs(math.log(machine.balance / truth.balance)) < 0.25
    assert abs(math.log(machine.launch_bytes / truth.launch_bytes)) < 0.25
    assert roofline.fit(obs, n=61)[1] > 2 * rms


def test_costs_count_the_hidden_kernels():
    """A conv with a bias on a channel slice: cuDNN's copy of the input and its bias addition are kernels
    and bytes of the step."""
    conv = nn.Conv2d(4, 4, 3, bias=True)
    x = torch.randn(2, 8, 6, 6)
    counts = train_step_counts(conv, x[:, :4], lambda t: conv(t).square().sum())
    c = roofline.costs(counts)
    assert counts.hidden == {'copy': 2, 'bias': 1, 'bias_grad': 1}  # the input forward, and for the weight's gradient
    assert c.bytes == sum(counts.bytes.values()) + sum(counts.hidden_bytes.values())
    assert c.kernels > sum(counts.ops.values()) - counts.ops.get('aten.empty', 0)
    assert c.macs == 2 * 2 * 4 * 4 * 4 * 36  # forward and the weight's gradient (x needs none)
    assert len(c.launches) == c.kernels and sum(b for b, _ in c.launches) == c.bytes
    assert sum(m for _, m in c.launches) == c.macs


def test_fit_recovers_the_machine_that_made_the_ratios():
    truth = roofline.Machine(balance=40.0, launch_bytes=2e7)
    rng = random.Random(0)
    obs = []
    for _ in range(12):
        base = roofline.Costs(rng.uniform(1e9, 5e9), rng.uniform(1e11, 5e11), rng.randint(150, 500))
        c = roofline.Costs(base.bytes * rng.uniform(1, 6), base.macs * rng.uniform(1, 3),
                           base.kernels * rng.uniform(1, 7))
        obs.append((c, base, roofline.ratio(c, base, truth)))
    machine, rms = roofline.fit(obs)
    assert rms < 0.01
    assert abs(math.log(machine.balance / truth.balance)) < 0.1
    assert abs(math.log(machine.launch_bytes / truth.launch_bytes)) < 0.2
    wrong = [(c, b, r * 1.5) for c, b, r in obs[:6]] + obs[6:]  # a model that cannot fit them all
    assert roofline.fit(wrong)[1] > 0.1


def test_observations_pick_the_measured_settings_and_modes():
    c = roofline.Costs(1.0, 1.0, 1)
    costs = {('resnet50', 'bf16', 256): {'origin': c, 'dyrep': c, 'dbb': c, 'dyrep+fast': c},
             ('resnet18', 'fp32', 32): {'origin': c, 'dyrep': c}}  # not a measured setting
    obs = roofline.observations(costs, modes=('dyrep', ))
    assert list(obs) == ['bf16'] and [r for _, _, r in obs['bf16']] == [1.57]
    assert len(roofline.observations(costs)['bf16']) == 2


def test_cli(tmp_path):
    """ResNet-18 only, at 32x32 (the counts' shapes, not the H200's: the fit's mechanics)."""
    out = tmp_path / 'model.json'
    proc = run_tool(['tools/analysis/gpu_model.py', '--archs', 'resnet18', '--batches', '64', '--size', '32',
                     '--out', out])
    result = json.loads(out.read_text())
    assert set(result['fits']) == {'all', 'no-dbb', 'all/floor', 'no-dbb/floor'}
    assert set(result['fits']['all']) == {'fp32', 'bf16'}
    rows = {(r['precision'], r['mode']): r for r in result['rows']}
    assert rows[('fp32', 'origin')]['all'] == 1.0 and rows[('fp32', 'dyrep')]['measured'] == 1.50
    assert rows[('bf16', 'dbb+fast')]['no-dbb'] > 1.0 and 'rms log residual' in proc.stdout
    assert rows[('fp32', 'origin')]['all/floor'] == 1.0 and rows[('bf16', 'dbb')]['all/floor'] > 1.0
    assert isinstance(result['costs']['resnet18/fp32/64']['dbb']['launches'], int)  # a count, not the list
