"""The decision does not depend on the order in which the same gradients were summed, nor on 1 vs 2 processes."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mmdyrep.core import Evolver
from tests.core.conftest import make_resnet18

STEPS, BATCH = 2, 4  # per step: micro-batches of 4 images (BN statistics per micro-batch)


def micro_batches(step, micro):
    g = torch.Generator().manual_seed(100 + step)
    return [(torch.randn(BATCH, 3, 48, 48, generator=g), torch.randint(0, 10, (BATCH, ), generator=g))
            for _ in range(micro)]


def micro_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def set_grads(model, grads):
    for n, p in model.named_parameters():
        p.grad = grads[n]


def decide(metric, order):
    """The ranking after STEPS recorded steps whose gradients are the mean of the micro-batches'
    gradients, summed in float32 in ``order`` (and whether that changed any gradient's bits)."""
    micro = len(order)
    model = make_resnet18()
    model.train()
    evolver = Evolver(model, metric=metric, example_input=torch.zeros(1, 3, 48, 48))
    changed = False
    for step in range(STEPS):
        parts = [micro_grads(model, x, y) for x, y in micro_batches(step, micro)]
        total = {n: sum((parts[i][n] for i in order[1:]), parts[order[0]][n].clone()) / micro for n in parts[0]}
        ref = {n: sum((parts[i][n] for i in range(1, micro)), parts[0][n].clone()) / micro for n in parts[0]}
        changed |= any(not torch.equal(total[n], ref[n]) for n in total)
        set_grads(model, total)
        evolver.record()
    return evolver.scores.ranking(), changed


@pytest.mark.parametrize('metric', ['synflow', 'taylor'])
def test_summation_order_does_not_change_the_decision(metric):
    forward, _ = decide(metric, [0, 1, 2, 3])
    backward, changed = decide(metric, [3, 1, 0, 2])
    assert changed, 'the two orders gave bit-identical gradients: the test would prove nothing'
    assert forward[0] == backward[0]
    assert forward[:3] == backward[:3]


def _rank_main(rank, world, store, metric, out):
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=world)
    try:
        model = make_resnet18()
        model.train()
        evolver = Evolver(model, metric=metric, example_input=torch.zeros(1, 3, 48, 48))
        for step in range(STEPS):
            x, y = micro_batches(step, world)[rank]
            grads = micro_grads(model, x, y)
            for g in grads.values():  # what DDP does before the optimizer step: the mean over ranks
                dist.all_reduce(g)
                g.div_(world)
            set_grads(model, grads)
            evolver.record()
        evolver.scores.reduce_(dist.all_reduce)  # as Evolver.step does
        if rank == 0:
            torch.save(evolver.scores.ranking(), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('metric', ['synflow'])
def test_one_and_two_processes_decide_alike(tmp_path, metric):
    single, _ = decide(metric, [0, 1])
    out = str(tmp_path / 'ranking.pt')
    mp.start_processes(_rank_main, args=(2, str(tmp_path / 'store'), metric, out), nprocs=2, start_method='spawn')
    two = torch.load(out)
    assert two[0] == single[0]
    assert two[:3] == single[:3]
