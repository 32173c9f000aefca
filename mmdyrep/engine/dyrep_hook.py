"""DyRepHook: the paper's Algorithm 1 inside an mmengine Runner (mmdet, mmseg, mmpretrain); lifecycle glue
only. The jobs live beside it: :mod:`.checks`, :mod:`.scoring`, :mod:`.update`, :mod:`.optim`, :mod:`.ddp`,
:mod:`.report` and the history file in :mod:`mmdyrep.core.history`."""
import copy
import os.path as osp
import time
from typing import List, Optional, Sequence

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop, EpochBasedTrainLoop

from mmdyrep.core import DEFAULT_METRIC, DyRepError, Evolver, apply_structure, extract_structure, iter_blocks
from mmdyrep.core.history import make_history, write_history
from mmdyrep.core.options import (check_branches, check_dep_threshold, check_gamma_init, check_max_depth,
                                  check_metric, check_topk)
from mmdyrep.core.structure import STRUCTURE_KEY, decode_structure
from mmdyrep.models.complexity import deployed_count
from mmdyrep.models.dyrep_resnet import find_backbone
from .checks import check_runner, check_window
from .faults import fault_point
from .optim import arrange_groups, flatten_schedulers, group_names, sync_optimizer
from .report import DEGENERATE_RATIO, backbone_record, degeneracy_warning, update_lines, update_scalars
from .scoring import pending_unscale, score_at_each_step
from .update import calibration_loader, check_ranks, checkpoint_due, consolidate_scores, evolve, evolver_kwargs


@HOOKS.register_module()
class DyRepHook(Hook):
    """Evolve a DyRepResNet during training (Algorithm 1).

    Lifecycle:

    * ``before_run``: checks the configuration (errors name what is wrong) and registers a step
      pre-hook on the wrapped torch optimizer (``Optimizer.register_step_pre_hook``; removed in
      ``after_run``): every optimizer step first scores each candidate conv from its gradient as the
      optimizer sees it (accumulated, clipped, AMP-unscaled; a step AMP skips is not scored) (line 4).
      No collective here.
    * ``after_load_checkpoint`` (resume / load_from): rebuilds the saved structure, the
      optimizer's parameter groups and the scores accumulated since the last update.
    * ``before_train``: adds the parameters of a loaded structure to the optimizer, re-wraps DDP when
      the structure changed after wrapping, and rewrites the history file from the loaded records.
    * ``after_train_epoch`` / ``after_train_iter`` (by the train loop: epochs for
      EpochBasedTrainLoop, iterations for IterBasedTrainLoop): every ``interval`` units in
      ``(begin, end]`` an update (lines 7-10): scores reduced once over ranks, top-k ops grown
      (new branches equal on all ranks, BN calibrated on ``num_calib_batches`` batches of a
      separate train-dataloader iterator, statistics averaged over ranks, Rep), weak branches
      cut (Dep), optimizer and schedulers updated, DDP re-wrapped, structure fingerprint
      compared across ranks, results logged and written to ``<work_dir>/dyrep_history.json``.
    * ``before_save_checkpoint`` (rank 0): stores scores, parameter groups and history.

    Args:
        interval: ``t`` of Algorithm 1, in epochs or iterations (as the train loop counts).
        begin, end: updates happen at ``begin + k * interval <= end`` (``end=None``: the end
            of training). The paper stops growing before the end (e.g. epoch 100 of 120).
        metric: saliency metric of each candidate OP-BN operation (the conv with the norm that
            normalises its output): ``taylor`` (the default: per channel, the squared first-order
            effect of scaling the operation's output, summed over steps), ``synflow`` (the paper's
            Eq. 4 over the operation: signed, its ranking flips between intervals in the saliency
            study), ``synflow_conv`` (the conv weight only, as the authors' code: degenerate under
            batch-statistics BN), ``snip``, ``grad_norm``, ``random``, ``vote`` (see
            :mod:`mmdyrep.core.saliency`; grasp needs a second-order pass and is not offered).
            Each update logs the top-5 and keeps the full score table in the history; a metric
            that is numerically degenerate for most candidates gets one warning.
        topk: ops grown per update.
        branches: branch types added on a grow (default: all that fit; Table 1).
        gamma_init: gamma of each new branch's last BN (Sec. 4.1).
        num_calib_batches: BN calibration batches per update (Sec. 4.1: 20).
        dep: cut weak branches after each grow (Sec. 4.2).
        dep_threshold: lambda of Sec. 4.2.
        max_depth: how many DyRep blocks may contain a growing conv (``None``: any depth). The
            default 1: a grown conv's origin and the K×K inside its 1x1-KxK branch may grow once
            more, not deeper (the paper's Fig. 6 shows two levels). An origin is scored with its
            block's norm, so right after a grow it carries its location's whole score and a stable
            metric picks it again: the depth bounds how much of the budget one location takes.
        check_equivalence: measure and log the backbone's eval-output change of each update
            on one calibration batch (should be ~1e-7; exactness of Rep/Dep).
        flops_input_shape: input of the params/FLOPs counts (backbone, conv+linear MACs).
        seed: seeds the new branches' initialisation and the calibration sampler.
    """

    priority = 'NORMAL'  # before the CheckpointHook (its checkpoints hold the new structure)
    DEGENERATE_RATIO = DEGENERATE_RATIO  #: below it a score is rounding-sized (:mod:`.report`)

    def __init__(self,
                 interval: int = 5,
                 begin: int = 0,
                 end: Optional[int] = None,
                 metric: str = DEFAULT_METRIC,
                 topk: int = 1,
                 branches: Optional[Sequence[str]] = None,
                 gamma_init: float = 0.01,
                 num_calib_batches: int = 20,
                 dep: bool = True,
                 dep_threshold: float = 0.02,
                 max_depth: Optional[int] = 1,
                 check_equivalence: bool = True,
                 flops_input_shape: Sequence[int] = (3, 224, 224),
                 history_file: str = 'dyrep_history.json',
                 seed: int = 0):
        check_window(interval, begin, end)
        # the paper's hyper-parameters: one set of rules (core/options.py); grasp needs a second-order
        # pass the hook does not run
        check_metric(metric, 'DyRepHook', exclude=('grasp', ))
        check_topk(topk, 'DyRepHook')
        check_branches(branches, 'DyRepHook')
        check_gamma_init(gamma_init, 'DyRepHook')
        check_dep_threshold(dep_threshold, 'DyRepHook')
        check_max_depth(max_depth, 'DyRepHook')
        if not isinstance(num_calib_batches, int) or num_calib_batches < 0:
            raise DyRepError(f'DyRepHook: num_calib_batches must be an int >= 0, got {num_calib_batches!r}')
        self.interval, self.begin, self.end = interval, begin, end
        self.metric, self.topk = metric, topk
        self.branches = tuple(branches) if branches is not None else None
        self.gamma_init, self.num_calib_batches = gamma_init, num_calib_batches
        self.dep, self.dep_threshold, self.max_depth = dep, dep_threshold, max_depth
        self.check_equivalence = check_equivalence
        self.flops_input_shape = tuple(flops_input_shape)
        self.history_file, self.seed = history_file, seed
        self.evolver: Optional[Evolver] = None
        self.records: List[dict] = []
        self.num_updates = 0
        self._deployed_counts = None
        self._warned_degenerate = False
        self._step_handle = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _unit(self, runner) -> str:
        return 'epoch' if self.by_epoch else 'iter'

    def _scoring(self, runner) -> bool:
        now = runner.epoch if self.by_epoch else runner.iter
        return self.begin <= now and (self.end is None or now < self.end)

    def _is_update(self, n: int) -> bool:
        return n > self.begin and (n - self.begin) % self.interval == 0 and (self.end is None or n <= self.end)

    def _log(self, runner, msg: str) -> None:
        runner.logger.info(f'[DyRep] {msg}')

    # -------------------------------------------------------------- lifecycle
    def before_run(self, runner) -> None:
        if not isinstance(runner._train_loop, BaseLoop):
            # runner.test() / val() (train() builds its loop before before_run): nothing to evolve,
            # the structure comes with the weights
            return
        loop = runner.train_loop
        self.by_epoch = isinstance(loop, EpochBasedTrainLoop)
        limit = loop.max_epochs if self.by_epoch else loop.max_iters
        unit = 'epochs' if self.by_epoch else 'iterations'
        check_runner(runner, self.interval, self.begin, self.end, limit, unit)
        try:
            prefix, backbone = find_backbone(self._model(runner))
        except DyRepError as e:
            raise DyRepError(f'DyRepHook: {e}') from None
        self.prefix = prefix + '.' if prefix else ''
        weight = next(backbone.parameters())
        example = torch.zeros((1, ) + self.flops_input_shape, dtype=weight.dtype, device=weight.device)
        self.evolver = Evolver(backbone, candidate_filter=backbone.is_grow_candidate, example_input=example,
                               **evolver_kwargs(self))
        if not self.evolver.candidates():
            raise DyRepError('DyRepHook: no conv of the backbone may grow (all frozen, or excluded by '
                             f'grow_candidates={backbone.grow_candidates})')
        self._step_handle = score_at_each_step(runner.optim_wrapper, self.evolver, lambda: self._scoring(runner))
        self._log(runner, f'{len(self.evolver.candidates())} candidate convs; update every {self.interval} '
                  f'{unit} in ({self.begin}, {self.end or limit}], metric {self.metric}, top-{self.topk}')

    def after_run(self, runner) -> None:
        if self._step_handle is not None:
            self._step_handle.remove()
            self._step_handle = None

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        if self.evolver is None:
            return
        state = checkpoint.get('state_dict', checkpoint)
        key = self.prefix + STRUCTURE_KEY
        backbone = self.evolver.model
        if key in state:
            structure = decode_structure(state[key], key)
            if structure != extract_structure(backbone):
                apply_structure(backbone, structure, replace=True)
                self.evolver.structure_changed()
        saved = checkpoint.get('dyrep')
        if saved is None or not runner._resume:
            return  # load_from starts a new run: only the structure comes along
        self.records = list(saved.get('history', []))
        self.num_updates = saved.get('num_updates', 0)
        arrange_groups(runner.optim_wrapper.optimizer, self._model(runner), saved['param_groups'])
        if dist.get_rank() == 0:
            self.evolver.load_state_dict(saved['evolver'])
        self._log(runner, f'resumed: {sum(1 for _ in iter_blocks(backbone))} DyRep blocks, '
                  f'{self.num_updates} updates so far')

    def before_train(self, runner) -> None:
        self.evolver.structure_changed()  # init_weights / load_from may have loaded a structure
        added, removed = self._sync_optimizer(runner)
        if added or removed:
            self._log(runner, f'optimizer: {len(added)} parameters added, {removed} removed (loaded structure)')
        if is_model_wrapper(runner.model) and extract_structure(self.evolver.model)['blocks']:
            self._rewrap(runner)
        if dist.get_rank() == 0:
            self._deployed_counts = deployed_count(self.evolver.model, self.flops_input_shape)
            if self.records:  # resumed: the file says what the checkpoint holds (a killed update's record goes)
                self._write_history(runner)
            else:
                self._add_record(runner, {}, {}, runner.iter, runner.epoch)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.by_epoch:
            return
        n = runner.iter + 1
        if self._is_update(n):
            self._update(runner, n)
        elif checkpoint_due(runner, n):
            consolidate_scores(self.evolver)

    def after_train_epoch(self, runner) -> None:
        if not self.by_epoch:
            return
        n = runner.epoch + 1
        if self._is_update(n):
            self._update(runner, n)
        else:
            consolidate_scores(self.evolver)

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        checkpoint['dyrep'] = {
            'version': 1,
            'evolver': self.evolver.state_dict(),
            'param_groups': group_names(runner.optim_wrapper.optimizer, self._model(runner)),
            'history': self.records,
            'num_updates': self.num_updates,
        }

    # ----------------------------------------------------------------- update
    def _update(self, runner, n: int) -> None:
        t0 = time.perf_counter()
        model = self._model(runner)
        loader = calibration_loader(runner.train_dataloader, self.seed, self.num_updates)
        report, change = evolve(self.evolver, model, loader, runner.optim_wrapper, self.num_calib_batches,
                                self.check_equivalence, self.seed + 7919 * (self.num_updates + 1))
        self.num_updates += 1
        if not self._warned_degenerate and dist.get_rank() == 0:
            warning = degeneracy_warning(self.metric, report, self.DEGENERATE_RATIO)
            if warning is not None:
                self._warned_degenerate = True
                runner.logger.warning(f'[DyRep] {warning}')
        added, removed = self._sync_optimizer(runner)
        if is_model_wrapper(runner.model):
            self._rewrap(runner)
        agreed = check_ranks(self.evolver.model, f'{self._unit(runner)} {n}')
        if agreed:
            self._log(runner, agreed)
        if dist.get_rank() == 0:
            epoch = runner.epoch + 1 if self.by_epoch else runner.epoch
            saliency = {k: report[k] for k in ('metric', 'scores', 'degeneracy', 'kinds', 'norm_modes')}
            self._add_record(runner, report['grown'], report['cut'], runner.iter + 1, epoch, change, saliency)
            update = f'update {self.num_updates} at {self._unit(runner)} {n}'
            for line in update_lines(self.records, report, self.metric, update, added, removed,
                                     time.perf_counter() - t0):
                self._log(runner, line)
            runner.visualizer.add_scalars(update_scalars(self.records, len(list(iter_blocks(self.evolver.model)))),
                                          step=runner.iter + 1)

    def _sync_optimizer(self, runner):
        return sync_optimizer(runner.optim_wrapper.optimizer, self._model(runner), runner.cfg.optim_wrapper,
                              flatten_schedulers(runner.param_schedulers))

    def _rewrap(self, runner) -> None:
        module = self._model(runner)
        runner.model = runner.wrap_model(copy.deepcopy(runner.cfg.get('model_wrapper_cfg')), module)

    # --------------------------------------------------------------- history
    def _add_record(self, runner, grown, cut, it, epoch, change=None, saliency=None) -> None:
        """Append the record of the backbone now and rewrite ``<work_dir>/<history_file>`` (rank 0)."""
        record = backbone_record(self.evolver.model, self.flops_input_shape, it, epoch, grown, cut, change,
                                 self._deployed_counts)
        if saliency is not None:
            record['saliency'] = saliency
        self.records.append(record)
        self._write_history(runner)

    def _write_history(self, runner) -> None:
        history = make_history(self.records, self.by_epoch, runner.max_iters,
                               runner.max_epochs if self.by_epoch else None, self.flops_input_shape)
        write_history(osp.join(runner.work_dir, self.history_file), history,
                      before_replace=lambda: fault_point('history', self.num_updates))


__all__ = ['DyRepHook', 'pending_unscale']
