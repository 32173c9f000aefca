"""DyRepHook: the paper's Algorithm 1 inside an mmengine Runner (mmdet, mmseg, mmpretrain)."""
import contextlib
import copy
import json
import os
import os.path as osp
import random
import time
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine import dist
from mmengine.hooks import CheckpointHook, EMAHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop, EpochBasedTrainLoop
from torch.utils.data import DataLoader, RandomSampler

from mmdyrep.core.history import FORMAT as HISTORY_FORMAT
from mmdyrep.core.history import VERSION as HISTORY_VERSION
from mmdyrep.core.history import time_average
from mmdyrep.core.options import (check_branches, check_dep_threshold, check_gamma_init, check_max_depth,
                                  check_metric, check_topk)
from mmdyrep.core.saliency import median, top
from mmdyrep.core import (DEFAULT_METRIC, DyRepError, Evolver, apply_structure, full_fp32, relative_error,
                          extract_structure, iter_blocks)
from mmdyrep.models.complexity import count, deployed_count
from mmdyrep.core.structure import STRUCTURE_KEY, decode_structure
from mmdyrep.models.dyrep_resnet import find_backbone
from .ddp import average_norm_statistics, broadcast_branches, rank_fingerprints, sum_over_ranks
from .optim import arrange_groups, flatten_schedulers, group_names, sync_optimizer


def pending_unscale(wrapper) -> Optional[torch.Tensor]:
    """``1 / loss scale`` when the optimizer's gradients are still scaled at its step, else ``None``.

    mmengine's AmpOptimWrapper unscales them (``loss_scaler.step``) before the optimizer steps; a
    wrapper that holds a GradScaler and steps the optimizer directly does not. GradScaler keeps which
    optimizers it has unscaled in ``_per_optimizer_states`` (no public accessor)."""
    scaler = getattr(wrapper, 'loss_scaler', None)
    if scaler is None or not scaler.is_enabled():
        return None
    from torch.amp.grad_scaler import OptState
    if scaler._per_optimizer_states[id(wrapper.optimizer)]['stage'] is OptState.UNSCALED:
        return None
    return 1.0 / scaler._scale if isinstance(scaler._scale, torch.Tensor) else torch.tensor(1.0 / scaler.get_scale())


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
    * ``before_train``: adds the parameters of a loaded structure to the optimizer and re-wraps
      DDP when the structure changed after wrapping.
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

        def bad(msg):
            return DyRepError(f'DyRepHook: {msg}')

        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise bad(f'interval must be a positive int (epochs or iterations), got {interval!r}')
        if not isinstance(begin, int) or begin < 0:
            raise bad(f'begin must be an int >= 0, got {begin!r}')
        if end is not None and (not isinstance(end, int) or end <= begin):
            raise bad(f'end must be None or an int > begin ({begin}), got {end!r}')
        # the paper's hyper-parameters: one set of rules (core/options.py); grasp needs a second-order
        # pass the hook does not run
        check_metric(metric, 'DyRepHook', exclude=('grasp', ))
        check_topk(topk, 'DyRepHook')
        check_branches(branches, 'DyRepHook')
        check_gamma_init(gamma_init, 'DyRepHook')
        check_dep_threshold(dep_threshold, 'DyRepHook')
        check_max_depth(max_depth, 'DyRepHook')
        if not isinstance(num_calib_batches, int) or num_calib_batches < 0:
            raise bad(f'num_calib_batches must be an int >= 0, got {num_calib_batches!r}')
        self.interval, self.begin, self.end = interval, begin, end
        self.metric, self.topk = metric, topk
        self.branches = tuple(branches) if branches is not None else None
        self.gamma_init, self.num_calib_batches = gamma_init, num_calib_batches
        self.dep, self.dep_threshold, self.max_depth = dep, dep_threshold, max_depth
        self.check_equivalence = check_equivalence
        self.flops_input_shape = tuple(flops_input_shape)
        self.history_file = history_file
        self.seed = seed
        self.evolver: Optional[Evolver] = None
        self.records: List[dict] = []
        self.num_updates = 0
        self._wrapped_structure = None
        self._deployed_counts = None
        self._warned_degenerate = False
        self._step_handle = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _backbone(self, runner):
        try:
            return find_backbone(self._model(runner))
        except DyRepError as e:
            raise DyRepError(f'DyRepHook: {e}') from None

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
        if self.begin >= limit or (self.end is not None and self.end > limit):
            raise DyRepError(f'DyRepHook: the window begin={self.begin}, end={self.end} lies outside the run '
                             f'({limit} {unit})')
        if self.begin + self.interval > (self.end or limit):
            raise DyRepError(f'DyRepHook: no update fits: begin={self.begin} + interval={self.interval} is past '
                             f'{"end=" + str(self.end) if self.end else "the end of the run"} ({limit} {unit})')
        for hook in runner.hooks:
            if isinstance(hook, EMAHook):
                raise DyRepError('DyRepHook cannot run with EMAHook: the averaged model would keep the old '
                                 'structure when parameters are added or cut. Remove EMAHook from custom_hooks.')
        if runner.cfg.get('compile'):
            raise DyRepError('DyRepHook cannot run with cfg.compile: a compiled graph would not see structure '
                             'changes. Remove `compile` from the config.')
        from mmengine.optim import OptimWrapper
        if not isinstance(runner.optim_wrapper, OptimWrapper):
            raise DyRepError(f'DyRepHook supports a single OptimWrapper, got {type(runner.optim_wrapper).__name__}')
        prefix, backbone = self._backbone(runner)
        self.prefix = prefix + '.' if prefix else ''
        weight = next(backbone.parameters())
        example = torch.zeros((1, ) + self.flops_input_shape, dtype=weight.dtype, device=weight.device)
        self.evolver = Evolver(backbone, metric=self.metric, topk=self.topk, branches=self.branches,
                               gamma_init=self.gamma_init, dep=self.dep, dep_threshold=self.dep_threshold,
                               candidate_filter=backbone.is_grow_candidate, max_depth=self.max_depth,
                               seed=self.seed, example_input=example)
        if not self.evolver.candidates():
            raise DyRepError('DyRepHook: no conv of the backbone may grow (all frozen, or excluded by '
                             f'grow_candidates={backbone.grow_candidates})')
        self._hook_optimizer(runner)
        self._log(runner, f'{len(self.evolver.candidates())} candidate convs; update every {self.interval} '
                  f'{unit} in ({self.begin}, {self.end or limit}], metric {self.metric}, top-{self.topk}')

    def _hook_optimizer(self, runner) -> None:
        wrapper = runner.optim_wrapper

        def record(optimizer, args, kwargs):
            if self._scoring(runner):
                self.evolver.record(grad_scale=pending_unscale(wrapper))

        self._step_handle = wrapper.optimizer.register_step_pre_hook(record)

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
        model = self._model(runner)
        added, removed = sync_optimizer(runner.optim_wrapper.optimizer, model, runner.cfg.optim_wrapper,
                                        flatten_schedulers(runner.param_schedulers))
        if added or removed:
            self._log(runner, f'optimizer: {len(added)} parameters added, {removed} removed (loaded structure)')
        structure = extract_structure(self.evolver.model)
        if is_model_wrapper(runner.model) and structure['blocks']:
            self._rewrap(runner)
        self._wrapped_structure = structure
        if dist.get_rank() == 0:
            self._deployed_counts = deployed_count(self.evolver.model, self.flops_input_shape)
            if not self.records:
                self.records.append(self._record(runner, {}, {}, runner.iter, runner.epoch))
                self._write_history(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.by_epoch:
            return
        n = runner.iter + 1
        if self._is_update(n):
            self._update(runner, n)
        elif self._checkpoint_due(runner, n):
            self._consolidate()

    def after_train_epoch(self, runner) -> None:
        if not self.by_epoch:
            return
        n = runner.epoch + 1
        if self._is_update(n):
            self._update(runner, n)
        else:
            self._consolidate()

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        checkpoint['dyrep'] = {
            'version': 1,
            'evolver': self.evolver.state_dict(),
            'param_groups': group_names(runner.optim_wrapper.optimizer, self._model(runner)),
            'history': self.records,
            'num_updates': self.num_updates,
        }

    # ----------------------------------------------------------------- update
    def _checkpoint_due(self, runner, n: int) -> bool:
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and not hook.by_epoch:
                if hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                        hook.save_last and n == runner.max_iters):
                    return True
        return False

    def _consolidate(self) -> None:
        """Sum the scores on rank 0 (others restart empty) so a checkpoint holds them all."""
        if dist.get_world_size() > 1:
            self.evolver.scores.reduce_(lambda t: dist.all_reduce(t, op='sum'))
            if dist.get_rank() != 0:
                self.evolver.scores.reset()

    @contextlib.contextmanager
    def _own_rng(self, seed: int):
        """Seeded randomness for the update that leaves the training's RNG streams as they were."""
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                yield
            finally:
                random.setstate(py)
                np.random.set_state(npy)

    def _calibration_loader(self, runner, n_update: int) -> DataLoader:
        train = runner.train_dataloader
        batch_size = train.batch_size or getattr(train.batch_sampler, 'batch_size', 1)
        generator = torch.Generator().manual_seed(self.seed * 100003 + n_update * 1009 + dist.get_rank())
        return DataLoader(train.dataset, batch_size=batch_size, sampler=RandomSampler(train.dataset,
                                                                                     generator=generator),
                          collate_fn=train.collate_fn, num_workers=train.num_workers, drop_last=False)

    def _amp(self, runner):
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, AmpOptimWrapper):
            from mmengine.runner.amp import autocast
            return autocast(dtype=getattr(wrapper, 'cast_dtype', None))
        return contextlib.nullcontext()

    def _update(self, runner, n: int) -> None:
        t0 = time.perf_counter()
        model = self._model(runner)
        backbone = self.evolver.model
        was_training = model.training
        world = dist.get_world_size()
        loader = self._calibration_loader(runner, self.num_updates)

        def inputs_of(data):
            with self._amp(runner):
                return model.data_preprocessor(data, True)['inputs']

        def calibrate(_backbone):
            for i, data in enumerate(loader):
                if i >= self.num_calib_batches:
                    break
                with self._amp(runner):
                    backbone(inputs_of(data))

        probe = None
        if self.check_equivalence:
            probe = inputs_of(next(iter(loader)))
            before = self._eval_features(backbone, probe)

        with self._own_rng(self.seed + 7919 * (self.num_updates + 1)):
            many = world > 1
            report = self.evolver.step(calibrate=calibrate if self.num_calib_batches else None,
                                       all_reduce=sum_over_ranks if many else None,
                                       broadcast=broadcast_branches if many else None,
                                       sync_norms=average_norm_statistics if many else None)
        self.num_updates += 1
        model.train(was_training)
        self._check_degeneracy(runner, report)
        change = None
        if probe is not None:
            change = self._relative_change(before, self._eval_features(backbone, probe))
        added, removed = sync_optimizer(runner.optim_wrapper.optimizer, model, runner.cfg.optim_wrapper,
                                        flatten_schedulers(runner.param_schedulers))
        if is_model_wrapper(runner.model):
            self._rewrap(runner)
        self._check_ranks(runner, n)
        if dist.get_rank() == 0:
            epoch = runner.epoch + 1 if self.by_epoch else runner.epoch
            record = self._record(runner, report['grown'], report['cut'], runner.iter + 1, epoch, change)
            record['saliency'] = {k: report[k] for k in ('metric', 'scores', 'degeneracy', 'kinds', 'norm_modes')}
            self.records.append(record)
            self._write_history(runner)
            self._report(runner, n, record, report, added, removed, time.perf_counter() - t0)

    @staticmethod
    def _eval_features(backbone, inputs):
        """The backbone's eval-mode output on ``inputs`` in full float32: TF32 convolutions (on by default
        on CUDA GPUs) round at about 1e-3, which would drown the change this check measures."""
        was = backbone.training
        backbone.eval()
        with torch.no_grad(), full_fp32():
            out = backbone(inputs)
        backbone.train(was)
        return [o.float() for o in (out if isinstance(out, (list, tuple)) else [out])]

    @staticmethod
    def _relative_change(before, after) -> float:
        return max(relative_error(a, b) for a, b in zip(after, before))

    def _rewrap(self, runner) -> None:
        module = self._model(runner)
        runner.model = runner.wrap_model(copy.deepcopy(runner.cfg.get('model_wrapper_cfg')), module)

    def _check_ranks(self, runner, n: int) -> None:
        if dist.get_world_size() == 1:
            return
        prints = rank_fingerprints(self.evolver.model)
        if len(set(prints)) > 1:
            raise RuntimeError(f'DyRep: the ranks disagree on the structure or weights after the update at '
                               f'{self._unit(runner)} {n} (fingerprints per rank: {prints}); stopping.')
        self._log(runner, f'{len(prints)} ranks agree on structure and weights (fingerprint {prints[0]})')

    # ---------------------------------------------------------------- report
    #: A score whose magnitude is below this fraction of the magnitudes it sums is rounding-sized.
    DEGENERATE_RATIO = 1e-4

    def _check_degeneracy(self, runner, report) -> None:
        """One warning per run if most candidates' scores were numerically degenerate."""
        ratios = report['degeneracy']
        if self._warned_degenerate or not ratios or dist.get_rank() != 0:
            return
        low = [n for n, r in ratios.items() if r < self.DEGENERATE_RATIO]
        if len(low) * 2 <= len(ratios):
            return
        self._warned_degenerate = True
        modes = sorted(set(report['norm_modes'].values()))
        runner.logger.warning(
            f"[DyRep] metric '{self.metric}' is numerically degenerate for {len(low)} of {len(ratios)} candidates "
            f'(|sum| / sum|terms| < {self.DEGENERATE_RATIO:g}; median {median(ratios.values()):.1e}) '
            f'with norms in {"/".join(modes)} mode: its choice is decided by float rounding, not by the loss. '
            + ("With batch-statistics BN the loss does not depend on a conv's scale, so 'synflow_conv' is ~0; "
               "use metric='synflow' (the conv with its BN)." if 'batch-statistics' in modes else ''))

    def _top(self, report, k: int = 5) -> str:
        scores = report['scores'].get(self.metric) if self.metric != 'vote' else report['scores'].get('synflow')
        if not scores:
            return 'none'
        return ', '.join(f'{n} {scores[n]:.3e} ({report["kinds"].get(n, "?")})' for n in top(scores, k))

    def _record(self, runner, grown, cut, it, epoch, change=None) -> dict:
        backbone = self.evolver.model
        now = count(backbone, self.flops_input_shape)
        deployed = self._deployed_counts or deployed_count(self.evolver.model, self.flops_input_shape)
        return {
            'iter': int(it), 'epoch': int(epoch),
            'grown': grown, 'cut': cut,
            'params': now['params'], 'flops': now['flops'],
            'deployed_params': deployed['params'], 'deployed_flops': deployed['flops'],
            'eval_change': change,
            'structure': extract_structure(backbone),
            'importances': {n: b.importances() for n, b in iter_blocks(backbone)},
        }

    def _history(self, runner) -> dict:
        return {'format': HISTORY_FORMAT, 'version': HISTORY_VERSION, 'by_epoch': self.by_epoch,
                'max_iters': runner.max_iters, 'max_epochs': runner.max_epochs if self.by_epoch else None,
                'input_shape': list(self.flops_input_shape), 'records': self.records}

    def _write_history(self, runner) -> None:
        path = osp.join(runner.work_dir, self.history_file)
        with open(path + '.tmp', 'w') as f:
            json.dump(self._history(runner), f)
        os.replace(path + '.tmp', path)

    def _report(self, runner, n, record, report, added, removed, seconds) -> None:
        now = record['iter']
        start = self.records[0]['iter']
        avg_params = time_average(self.records, 'params', now, start)
        avg_flops = time_average(self.records, 'flops', now, start)
        grown = ', '.join(f'{k} <- [{" ".join(v)}]' for k, v in report['grown'].items()) or 'nothing'
        cut = ', '.join(f'{k} -x [{" ".join(v)}]' for k, v in report['cut'].items()) or 'nothing'
        change = f', eval-output change {record["eval_change"]:.1e}' if record['eval_change'] is not None else ''
        metric = self.metric if self.metric != 'vote' else 'vote (synflow shown)'
        self._log(runner, f'update {self.num_updates} at {self._unit(runner)} {n}: top-5 by {metric}: '
                  f'{self._top(report)}')
        self._log(runner, f'update {self.num_updates} at {self._unit(runner)} {n}: grew {grown}; cut {cut}; '
                  f'optimizer +{len(added)}/-{removed} params{change}; {seconds:.1f}s')
        self._log(runner, f'backbone now {record["params"] / 1e6:.2f}M params, {record["flops"] / 1e9:.2f} GFLOPs '
                  f'(average so far {avg_params / 1e6:.2f}M, {avg_flops / 1e9:.2f} G; deployed '
                  f'{record["deployed_params"] / 1e6:.2f}M, {record["deployed_flops"] / 1e9:.2f} G)')
        scalars = {'dyrep/params': record['params'], 'dyrep/flops': record['flops'],
                   'dyrep/avg_params': avg_params, 'dyrep/avg_flops': avg_flops,
                   'dyrep/blocks': len(list(iter_blocks(self.evolver.model)))}
        if record['eval_change'] is not None:
            scalars['dyrep/eval_change'] = record['eval_change']
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
