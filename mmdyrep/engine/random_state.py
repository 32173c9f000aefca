"""Exact resume: the random streams a run depends on travel with its checkpoints.

A DyRep decision depends on the gradients of a whole interval, so a resumed run must draw the same
random numbers as the run it continues: the augmentation of every sample, the DataLoader's seeds,
anything random in the model. mmengine re-seeds from the config's seed on resume, which gives other
numbers. :class:`RandomStateHook` (in the configs' ``custom_hooks``) makes resume exact:

* **the main streams** (Python ``random``, NumPy's global generator, torch's CPU generator, the CUDA
  generator of every local device) are captured per rank after every iteration at which an
  iteration-based checkpoint is due, after every epoch of a run that checkpoints by epoch (whether
  or not that epoch saves), and after each validation during training; a checkpoint gets the capture
  of its own iteration (``checkpoint['random_state']``: plain ints, tuples and tensors, loadable with
  ``weights_only=True``); ``--resume`` restores them on every rank before training continues;
* **validation draws nothing** from those streams: they are set back after each validation, so an
  evaluation in the uninterrupted run and none in the resumed one leave them alike;
* **the data streams**: every sample's pipeline runs on a stream of its own
  (:class:`EpochSeededPipeline`), seeded from (seed, rank, worker, epoch) at the first sample of each
  epoch, in the main process (``num_workers=0``) and in every worker (persistent or not). What a
  sample draws then depends on the epoch and the samples before it in its process only, never on a
  stream that dies with a killed run. The iteration-based loop's skip of the batches already trained
  replays them on these streams, reaching the state the run was in.

Validation and the DyRep update (its own seeded fork, :func:`.streams.forked`) leave the main
streams as they were, so the capture at a checkpoint is the state the next training step starts
from. Test-only fault injection (:func:`.faults.fault_point`) kills a run at named points.
"""
from typing import Optional

import torch
from mmengine import dist
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from .faults import fault_point
from .streams import EpochSeededPipeline, capture, pipelines_of, restore
from .update import checkpoint_due

KEY = 'random_state'


# ---------------------------------------------------------------------------- the hook
@HOOKS.register_module()
class RandomStateHook(Hook):
    """Checkpoints the random streams per rank and restores them on ``--resume`` (module docstring).

    Lifecycle:

    * ``before_train``: the data streams are installed on the training dataset's pipelines; on a
      resume from a checkpoint that holds ``random_state``, this rank's main streams are restored
      (with another number of ranks: a warning, and not restored);
    * ``before_train_epoch``: the epoch the data streams seed from;
    * ``after_train_iter``: the main streams of every rank are captured after an iteration at which an
      iteration-based CheckpointHook saves (:func:`.update.checkpoint_due`);
    * ``after_train_epoch``: captured after every epoch when a CheckpointHook saves by epoch, whether
      or not it saves at this epoch (priority ``LOW``, for both: after the DyRep update, before the
      CheckpointHook);
    * ``before_val`` / ``after_val_epoch``: the main streams are set back after validation (before the
      CheckpointHook's best-checkpoint save) and captured for it;
    * ``before_save_checkpoint`` (rank 0): the last capture goes into the checkpoint when it is of the
      checkpoint's iteration; otherwise, in one process, the streams are captured there, and with
      several, a warning (the capture was missed) and none.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self._captured: Optional[dict] = None
        self._loaded: Optional[dict] = None
        self._before_val: Optional[dict] = None
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    # ---- capture and restore
    def _capture(self, done: int) -> None:
        """Capture every rank's main streams after ``done`` iterations (a collective)."""
        states = dist.all_gather_object(capture()) if dist.get_world_size() > 1 else [capture()]
        self._captured = {'iter': done, 'ranks': states}

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        done = checkpoint.get('meta', {}).get('iter', runner.iter)
        if self._captured is None or self._captured['iter'] != done:
            if dist.get_world_size() > 1:  # no collective here (rank 0 only): the capture was missed
                runner.logger.warning('RandomStateHook: no capture of the random state at this checkpoint '
                                      f'(iteration {done}); resuming from it will not be exact.')
                return
            self._capture(done)
        checkpoint[KEY] = self._captured

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get(KEY)

    def before_train(self, runner) -> None:
        seed = runner.seed if runner.seed is not None else 0
        for dataset in pipelines_of(runner.train_dataloader.dataset):
            if not isinstance(dataset.pipeline, EpochSeededPipeline):
                dataset.pipeline = EpochSeededPipeline(dataset.pipeline, seed, dist.get_rank(), self._epoch)
        loaded, self._loaded = self._loaded, None
        if loaded is None or runner.iter == 0 or loaded.get('iter') != runner.iter:
            return  # a fresh run, or weights loaded with load_from
        ranks = loaded['ranks']
        if len(ranks) != dist.get_world_size():
            runner.logger.warning(f'RandomStateHook: the checkpoint holds the random state of {len(ranks)} '
                                  f'rank(s), this run has {dist.get_world_size()}: not restored, so the run does '
                                  'not continue exactly.')
            return
        restore(ranks[dist.get_rank()])

    def before_train_epoch(self, runner) -> None:
        self._epoch.fill_(runner.epoch)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        fault_point('iter', runner.iter + 1)
        if checkpoint_due(runner, runner.iter + 1):
            self._capture(runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        fault_point('epoch', runner.epoch + 1)
        if any(isinstance(h, CheckpointHook) and h.by_epoch for h in runner.hooks):
            self._capture(runner.iter)

    def before_val(self, runner) -> None:
        self._before_val = capture()

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._before_val is not None:
            restore(self._before_val)
            self._before_val = None
            if runner.iter > 0:  # during training: for a best checkpoint saved after this validation
                self._capture(runner.iter)
