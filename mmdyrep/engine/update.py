"""One update of Algorithm 1 (lines 7-10) in an mmengine run, as named steps: the calibration
batches (a separate, seeded iterator over the training set), the update's own random streams,
the evolver's step with the collectives of several processes, and the eval-output check that
Rep and Dep kept the backbone's function (Sec. 3); after it, the cross-rank check, and the scores
gathered on rank 0 for a checkpoint between updates."""
import contextlib
from typing import Callable, ContextManager, Dict, List, Optional, Tuple

import torch
from mmengine import dist
from mmengine.hooks import CheckpointHook
from mmengine.optim import AmpOptimWrapper
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from mmdyrep.core import Evolver, full_fp32, relative_error
from .ddp import average_norm_statistics, broadcast_branches, rank_fingerprints, sum_over_ranks
from .streams import data_streams_paused, forked


def calibration_loader(train: DataLoader, seed: int, n_update: int) -> DataLoader:
    """A fresh iterator over ``train``'s dataset for BN calibration (Sec. 4.1): same batch size,
    collate and workers, shuffled by a generator seeded from ``seed``, the update and the rank, so
    it never touches the training iterator."""
    batch_size = train.batch_size or getattr(train.batch_sampler, 'batch_size', 1)
    generator = torch.Generator().manual_seed(seed * 100003 + n_update * 1009 + dist.get_rank())
    return DataLoader(train.dataset, batch_size=batch_size, sampler=RandomSampler(train.dataset, generator=generator),
                      collate_fn=train.collate_fn, num_workers=train.num_workers, drop_last=False)


#: The DyRepHook settings that it passes on to :class:`Evolver` under the same names
EVOLVER_ARGS = ('metric', 'topk', 'branches', 'gamma_init', 'dep', 'dep_threshold', 'max_depth', 'seed')


def evolver_kwargs(hook) -> dict:
    """The :class:`Evolver` arguments ``hook`` (a DyRepHook; ``DyRepHook()`` for its defaults) passes on,
    besides the backbone's ``candidate_filter`` and ``example_input``: its settings in :data:`EVOLVER_ARGS`."""
    return {k: getattr(hook, k) for k in EVOLVER_ARGS}


def autocast_of(optim_wrapper) -> ContextManager:
    """mmengine's autocast as ``optim_wrapper`` trains with it (AmpOptimWrapper), else a no-op."""
    if isinstance(optim_wrapper, AmpOptimWrapper):
        from mmengine.runner.amp import autocast
        return autocast(dtype=getattr(optim_wrapper, 'cast_dtype', None))
    return contextlib.nullcontext()


def model_inputs(model: nn.Module, data, optim_wrapper) -> torch.Tensor:
    """The batch ``data`` through ``model``'s data preprocessor (training mode, under the run's autocast)."""
    with autocast_of(optim_wrapper):
        return model.data_preprocessor(data, True)['inputs']


def calibrator(model: nn.Module, loader: DataLoader, num_batches: int,
               optim_wrapper) -> Callable[[nn.Module], None]:
    """The ``calibrate`` callable of :meth:`Evolver.step`: forward ``num_batches`` batches of ``loader``
    through the backbone it is given (the new BNs collect their statistics)."""

    def calibrate(backbone: nn.Module) -> None:
        for i, data in enumerate(loader):
            if i >= num_batches:
                break
            with autocast_of(optim_wrapper):
                backbone(model_inputs(model, data, optim_wrapper))

    return calibrate


def collectives() -> Dict[str, Optional[Callable]]:
    """The distributed callables of :meth:`Evolver.step` (:mod:`.ddp`), or ``None`` in one process."""
    many = dist.get_world_size() > 1
    return dict(all_reduce=sum_over_ranks if many else None, broadcast=broadcast_branches if many else None,
                sync_norms=average_norm_statistics if many else None)


def eval_features(backbone: nn.Module, inputs: torch.Tensor) -> List[torch.Tensor]:
    """The backbone's eval-mode output on ``inputs`` in full float32: TF32 convolutions (on by default
    on CUDA GPUs) round at about 1e-3, which would drown the change this check measures."""
    was = backbone.training
    backbone.eval()
    with torch.no_grad(), full_fp32():
        out = backbone(inputs)
    backbone.train(was)
    return [o.float() for o in (out if isinstance(out, (list, tuple)) else [out])]


def relative_change(before: List[torch.Tensor], after: List[torch.Tensor]) -> float:
    """The largest relative error between two :func:`eval_features` (should be ~1e-7: Rep/Dep are exact)."""
    return max(relative_error(a, b) for a, b in zip(after, before))


def evolve(evolver: Evolver, model: nn.Module, loader: DataLoader, optim_wrapper, num_calib_batches: int,
           check_equivalence: bool, seed: int) -> Tuple[dict, Optional[float]]:
    """Algorithm 1 lines 7-10 on the bare ``model`` whose backbone ``evolver`` evolves: grow (BN calibrated
    on ``num_calib_batches`` batches of ``loader``), cut, under :func:`.streams.forked` ``(seed)``; ``model``
    keeps its training mode. Returns the evolver's report and the backbone's eval-output change on the
    first batch of ``loader`` (``None`` without ``check_equivalence``)."""
    backbone = evolver.model
    was_training = model.training
    calibrate = calibrator(model, loader, num_calib_batches, optim_wrapper) if num_calib_batches else None
    # everything random (the loader's seeds, the samples' augmentation, the new branches) draws from
    # the fork: the training's streams, main and data (.streams), are left as they were
    with forked(seed), data_streams_paused():
        probe = model_inputs(model, next(iter(loader)), optim_wrapper) if check_equivalence else None
        before = eval_features(backbone, probe) if probe is not None else None
        report = evolver.step(calibrate=calibrate, **collectives())
    model.train(was_training)
    change = relative_change(before, eval_features(backbone, probe)) if probe is not None else None
    return report, change


def check_ranks(backbone: nn.Module, where: str) -> Optional[str]:
    """After the update at ``where`` (e.g. 'epoch 5'): the line to log when all ranks hold the same
    structure and weights (``None`` in one process); a RuntimeError when they do not."""
    if dist.get_world_size() == 1:
        return None
    prints = rank_fingerprints(backbone)
    if len(set(prints)) > 1:
        raise RuntimeError(f'DyRep: the ranks disagree on the structure or weights after the update at '
                           f'{where} (fingerprints per rank: {prints}); stopping.')
    return f'{len(prints)} ranks agree on structure and weights (fingerprint {prints[0]})'


def checkpoint_due(runner, n: int) -> bool:
    """Whether an iteration-based CheckpointHook of ``runner`` saves after iteration ``n``."""
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and not hook.by_epoch:
            if hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                    hook.save_last and n == runner.max_iters):
                return True
    return False


def consolidate_scores(evolver: Evolver) -> None:
    """Sum the scores on rank 0 (others restart empty) so a checkpoint holds them all."""
    if dist.get_world_size() > 1:
        evolver.scores.reduce_(lambda t: dist.all_reduce(t, op='sum'))
        if dist.get_rank() != 0:
            evolver.scores.reset()


__all__ = ['EVOLVER_ARGS', 'autocast_of', 'calibration_loader', 'calibrator', 'check_ranks', 'checkpoint_due',
           'collectives', 'consolidate_scores', 'eval_features', 'evolve', 'evolver_kwargs', 'model_inputs',
           'relative_change']
