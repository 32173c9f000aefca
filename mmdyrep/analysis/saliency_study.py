"""The saliency study: do the metrics see the loss, on a config's real model, data, optimizer and loss?

:func:`run_study` drives a built mmengine Runner's model with its own optimizer wrapper and train
dataloader (no train loop, no hooks):

1. ``iters`` optimizer steps of warm-up, scored by the default metric; then, with ``grow > 0``, the
   default metric's top ``grow`` convs grow (Rep with BN calibration, as the DyRepHook's update), so
   that origins and inner K×K convs compete with plain convs;
2. two consecutive windows of ``window`` optimizer steps, every metric scoring every step's gradients
   (an optimizer step pre-hook, so clipped gradients, as the optimizer sees them);
3. per metric: the degeneracy ratio (median over candidates), Spearman's ρ between the two windows,
   the top-5 of each window and the kinds (plain / origin / inner) of those picks;
4. per metric, the top-1 from float32 and from float64 gradients of one batch (a copy of the model in
   each precision, same weights, data and random state; the backbone alone in float64 where a head op
   has no float64 kernel, see :func:`precision_top1`);
5. a loss check, reported with no target: per seed, the model as it is after the windows is trained
   ``loss_steps`` more steps three times, with nothing grown, with the default metric's top-ranked
   candidate grown and with its bottom-ranked one grown (same weights, data order and random state,
   a fresh optimizer each), and the training losses are compared.
"""
import copy
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

from mmdyrep.analysis.saliency import judge, kind_counts, median, spearman, top
from mmdyrep.core import DEFAULT_METRIC, Evolver
from mmdyrep.models.dyrep_resnet import backbone_of
from mmdyrep.engine.optim import sync_optimizer
from mmdyrep.engine.streams import forked, seed_streams

#: The metrics the study compares by default (grasp needs a second-order pass; vote is a mix).
STUDY_METRICS = ('synflow', 'synflow_conv', 'taylor', 'snip', 'grad_norm', 'random')


def batches(loader):
    """The loader's batches, epoch after epoch."""
    while True:
        for data in loader:
            yield data


def loss_value(log_vars) -> float:
    loss = log_vars['loss']
    return float(loss.detach() if isinstance(loss, torch.Tensor) else loss)


class _Recorder:
    """Scores the gradients of every optimizer step with the active evolvers (a public optimizer hook)."""

    def __init__(self, optimizer):
        self.active: List[Evolver] = []
        self.handle = optimizer.register_step_pre_hook(self._record)

    def _record(self, optimizer, args, kwargs):
        for evolver in self.active:
            evolver.record()

    def remove(self):
        self.handle.remove()


def _window_stats(evolver: Evolver) -> dict:
    state = evolver.scores.state_dict()['ops']
    return {'scores': evolver.scores.averages(), 'abs': {n: v['abs_sums'][0] for n, v in state.items()},
            'terms': {n: v['term_sums'][0] for n, v in state.items()}}


def _degeneracy(windows: Sequence[dict]) -> Dict[str, float]:
    ops = set.intersection(*(set(w['abs']) for w in windows))
    out = {}
    for n in ops:
        terms = sum(w['terms'][n] for w in windows)
        if terms > 0:
            out[n] = sum(w['abs'][n] for w in windows) / terms
    return out


def _cast(value, dtype: torch.dtype):
    """``value`` with every floating tensor in it (nested in tuples, lists, dicts) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


def _loss_backward(model, probe, dtype: torch.dtype, seed: int) -> None:
    model.train()
    seed_streams(seed)
    batch = model.data_preprocessor(copy.deepcopy(probe), True)
    loss, _ = model.parse_losses(model(batch['inputs'].to(dtype), batch['data_samples'], mode='loss'))
    loss.backward()


def precision_top1(model, probe, dtype: torch.dtype, make_evolvers: Callable[[torch.nn.Module], Dict[str, Evolver]],
                   seed: int) -> dict:
    """Each metric's top-1 from the gradients of one batch, ``probe``, on a copy of ``model`` in ``dtype``.

    The whole copy runs in ``dtype`` where the toolbox's ops allow it. Where an op has no kernel for
    it (mmcv's CPU NMS is float32-only), the DyRep backbone alone runs in ``dtype``: its inputs are
    cast in and its outputs cast back by forward hooks, so the head's gradient reaches every candidate
    and is accumulated in ``dtype`` from there. Returns ``{"top1": {metric: name} or None, "scope":
    "model" | "backbone" | None, "error": the whole-model failure or None}``."""
    error = None
    for scope in ('model', 'backbone'):
        copy_model = copy.deepcopy(model)
        bb = backbone_of(copy_model)
        (copy_model if scope == 'model' else bb).to(dtype)
        handles = []
        if scope == 'backbone':
            handles = [bb.register_forward_pre_hook(lambda m, args: _cast(args, dtype)),
                       bb.register_forward_hook(lambda m, args, out: _cast(out, torch.float32))]
        evolvers = make_evolvers(bb)
        try:
            _loss_backward(copy_model, probe, torch.float32 if scope == 'backbone' else dtype, seed)
        except Exception as e:  # noqa: BLE001  (a toolbox op without a kernel for dtype)
            if scope == 'backbone':
                return {'top1': None, 'scope': None, 'error': f'{error}; backbone only: {type(e).__name__}: {e}'}
            error = f'{type(e).__name__}: {e}'
            continue
        finally:
            for h in handles:
                h.remove()
        for e in evolvers.values():
            e.record()
        return {'top1': {m: (e.scores.ranking() or [None])[0] for m, e in evolvers.items()}, 'scope': scope,
                'error': error}


def run_study(runner: Runner,
              iters: int = 40,
              window: int = 20,
              metrics: Sequence[str] = STUDY_METRICS,
              default: str = DEFAULT_METRIC,
              grow: int = 1,
              loss_steps: int = 20,
              seeds: Sequence[int] = (0, 1, 2),
              calib_batches: int = 4,
              max_depth: Optional[int] = 1,
              example_shape: Sequence[int] = (3, 224, 224),
              log: Callable[[str], None] = print) -> dict:
    """The study on ``runner`` (built from a config, not trained): see the module docstring.

    Returns the JSON-able result: ``{"default": NAME, "metrics": {NAME: {"degeneracy", "spearman",
    "top": [[...], [...]], "kinds", "top1_float32", "top1_float64", "precision_agree"}},
    "loss_check": {...}, ...}``."""
    if default not in metrics:
        metrics = (default, ) + tuple(metrics)
    cfg = runner.cfg
    t0 = time.perf_counter()
    seed = int((cfg.get('randomness') or {}).get('seed') or 0)
    model = runner.model
    model.init_weights()
    backbone = backbone_of(model)
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    loader = Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader), seed=seed)
    calib_loader = Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader), seed=seed + 1)
    calib_iter = batches(calib_loader)
    calib_data = [next(calib_iter) for _ in range(calib_batches)]
    weight = next(backbone.parameters())
    example = torch.zeros((1, ) + tuple(example_shape), dtype=weight.dtype, device=weight.device)

    def evolver(bb, metric, topk=1):
        return Evolver(bb, metric=metric, topk=topk, candidate_filter=bb.is_grow_candidate, max_depth=max_depth,
                       example_input=example.to(next(bb.parameters()).dtype), seed=seed)

    def calibrator(m):
        inputs = [m.data_preprocessor(copy.deepcopy(d), True)['inputs'] for d in calib_data]

        def calibrate(bb):
            for x in inputs:
                bb(x.to(next(bb.parameters()).dtype))
        return calibrate

    evolvers = {m: evolver(backbone, m, topk=max(grow, 1) if m == default else 1) for m in metrics}
    recorder = _Recorder(optim_wrapper.optimizer)
    data = batches(loader)
    losses: List[float] = []

    def train(steps: int, what: str) -> None:
        model.train()
        for i in range(steps):
            losses.append(loss_value(model.train_step(next(data), optim_wrapper)))
        log(f'{what}: {steps} steps, loss {np.mean(losses[-steps:]):.4f} (mean), {len(evolvers[default].candidates())} '
            f'candidates, {time.perf_counter() - t0:.0f}s')

    # 1. warm-up, then grow so that every kind of candidate competes
    recorder.active = [evolvers[default]]
    train(iters, 'warm-up')
    grown: Dict[str, List[str]] = {}
    if grow > 0:
        report = evolvers[default].step(calibrate=calibrator(model))
        grown = report['grown']
        sync_optimizer(optim_wrapper.optimizer, model, cfg.optim_wrapper)
        log(f'grew {", ".join(grown) or "nothing"} (top-{grow} by {default})')
    for e in evolvers.values():
        e.structure_changed()
        e.scores.reset()

    # 2. two windows, every metric
    recorder.active = list(evolvers.values())
    windows: Dict[str, List[dict]] = {m: [] for m in metrics}
    for w in range(2):
        train(window, f'window {w + 1}')
        for m, e in evolvers.items():
            windows[m].append(_window_stats(e))
            e.scores.reset()
    recorder.remove()
    kinds = evolvers[default].kinds()

    # 3. per metric
    results: Dict[str, dict] = {}
    for m in metrics:
        first, second = windows[m]
        tops = [top(first['scores']), top(second['scores'])]
        results[m] = {
            'degeneracy': median(_degeneracy(windows[m]).values()),
            'spearman': spearman(first['scores'], second['scores']),
            'top': tops,
            'top_scores': [[w['scores'][n] for n in t] for w, t in zip(windows[m], tops)],
            'kinds': kind_counts(tops[0] + tops[1], kinds),
            'top1_kinds': [kinds.get(t[0]) for t in tops if t],
        }

    # 4. float32 vs float64 gradients of one batch
    probe = next(data)
    precision = {dtype: precision_top1(model, probe, dtype, lambda bb: {m: evolver(bb, m) for m in metrics},
                                       seed + 99)
                 for dtype in (torch.float32, torch.float64)}
    for m in metrics:
        r32, r64 = (precision[d]['top1'] for d in (torch.float32, torch.float64))
        results[m]['top1_float32'] = r32.get(m) if r32 is not None else None
        results[m]['top1_float64'] = r64.get(m) if r64 is not None else None
        results[m]['precision_agree'] = (results[m]['top1_float32'] == results[m]['top1_float64']
                                         if r32 is not None and r64 is not None else None)
        results[m]['passes'] = judge(results[m])
    precision_error = next((p['error'] for p in precision.values() if p['error']), None)
    precision_scope = precision[torch.float64]['scope']
    if precision_error and precision_scope:
        log(f'float64 pass: {precision_scope} in float64 only ({precision_error})')

    # 5. loss check
    combined = {n: (windows[default][0]['scores'].get(n, 0.0) + windows[default][1]['scores'].get(n, 0.0)) / 2
                for n in windows[default][1]['scores']}
    ranking = top(combined, len(combined))
    check = {'steps': loss_steps, 'seeds': list(seeds), 'top': ranking[0] if ranking else None,
             'bottom': ranking[-1] if ranking else None, 'runs': []}
    if loss_steps > 0 and ranking:
        base = copy.deepcopy(model)
        for s in seeds:
            run = {'seed': s}
            for label, name in (('none', None), ('top', check['top']), ('bottom', check['bottom'])):
                m = copy.deepcopy(base)
                if name is not None:
                    with forked(s):
                        evolver(backbone_of(m), default).grow([name], calibrator(m))
                wrapper = build_optim_wrapper(m, copy.deepcopy(cfg.optim_wrapper))
                seed_streams(s)
                it = batches(Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader), seed=s))
                m.train()
                run[label] = [loss_value(m.train_step(next(it), wrapper)) for _ in range(loss_steps)]
            check['runs'].append(run)
            log(f'loss check, seed {s}: mean loss none {np.mean(run["none"]):.4f}, top ({check["top"]}) '
                f'{np.mean(run["top"]):.4f}, bottom ({check["bottom"]}) {np.mean(run["bottom"]):.4f}')
        for label in ('none', 'top', 'bottom'):
            check[f'mean_{label}'] = float(np.mean([np.mean(r[label]) for r in check['runs']]))
        check['top_minus_bottom'] = check['mean_top'] - check['mean_bottom']
        check['top_lower_in'] = int(sum(np.mean(r['top']) < np.mean(r['bottom']) for r in check['runs']))

    return {
        'default': default,
        'iters': iters,
        'window': window,
        'grown': grown,
        'candidates': len(kinds),
        'candidate_kinds': kind_counts(kinds, kinds),
        'norm_modes': sorted(set(evolvers[default].norm_modes().values())),
        'metrics': results,
        'precision_error': precision_error,
        'precision_float64_scope': precision_scope,
        'loss_check': check,
        'train_losses': losses,
        'seconds': time.perf_counter() - t0,
    }


__all__ = ['STUDY_METRICS', 'precision_top1', 'run_study']
