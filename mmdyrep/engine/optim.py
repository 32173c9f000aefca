"""Keep an mmengine optimizer (and its schedulers) in step with a model whose parameters change.

New parameters join the group the config's ``optim_wrapper`` (``paramwise_cfg``, custom
constructors) would have put them in, with the current point of the schedules; removed
parameters leave with their state (momentum buffers).
"""
import copy
from typing import Dict, List, Sequence, Tuple

from torch import nn
from torch.optim import Optimizer

HYPER_SKIP = ('params', )


def reference_groups(model: nn.Module, optim_wrapper_cfg: dict) -> List[dict]:
    """The param groups the config would build for ``model`` now (no AMP scaler, nothing stepped)."""
    from mmengine.optim import build_optim_wrapper
    cfg = copy.deepcopy(dict(optim_wrapper_cfg))
    keep = {k: cfg[k] for k in ('optimizer', 'paramwise_cfg', 'constructor') if k in cfg}
    wrapper = build_optim_wrapper(model, dict(type='OptimWrapper', **keep))
    return wrapper.optimizer.param_groups


def _initial(group: dict, key: str):
    return group.get(f'initial_{key}', group.get(key))


def _same_hyper(existing: dict, ref: dict, lr_ratio: float) -> bool:
    for key, value in ref.items():
        if key in HYPER_SKIP:
            continue
        have = _initial(existing, key)
        want = value * lr_ratio if key == 'lr' else value
        if isinstance(want, float) and isinstance(have, (int, float)):
            if abs(have - want) > 1e-12 * max(1.0, abs(want)):
                return False
        elif have != want:
            return False
    return True


def sync_optimizer(optimizer: Optimizer, model: nn.Module, optim_wrapper_cfg: dict,
                   schedulers: Sequence = ()) -> Tuple[List[str], int]:
    """Make ``optimizer`` hold exactly the trainable parameters of ``model``.

    Returns the names of the parameters added and the number removed. ``schedulers``
    (mmengine ParamSchedulers on this optimizer) get the new groups' ``base_values``."""
    all_ids = {id(p) for p in model.parameters()}
    removed = 0
    for group in optimizer.param_groups:
        keep = []
        for p in group['params']:
            if id(p) in all_ids:
                keep.append(p)
            else:
                optimizer.state.pop(p, None)
                removed += 1
        group['params'] = keep
    held = {id(p) for g in optimizer.param_groups for p in g['params']}
    new = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if not new:
        return [], removed

    refs = reference_groups(model, optim_wrapper_cfg)
    ref_of: Dict[int, dict] = {id(p): g for g in refs for p in g['params']}
    # the auto-scale-lr ratio (and any other global lr factor applied after building)
    lr_ratio, anchor = 1.0, None
    for group in optimizer.param_groups:
        for p in group['params']:
            ref = ref_of.get(id(p))
            if ref is not None and ref.get('lr'):
                lr_ratio, anchor = _initial(group, 'lr') / ref['lr'], group
                break
        if anchor is not None:
            break
    anchor = anchor or optimizer.param_groups[0]

    added = []
    for name, p in new:
        ref = ref_of.get(id(p))
        if ref is None:  # the constructor chose not to optimize it (e.g. frozen by paramwise rules)
            continue
        target = next((g for g in optimizer.param_groups if _same_hyper(g, ref, lr_ratio)), None)
        if target is None:
            target = {k: v for k, v in ref.items() if k not in HYPER_SKIP}
            if 'lr' in target:
                target['lr'] *= lr_ratio
            for key in list(target):
                if f'initial_{key}' in anchor:
                    start = target[key]
                    target[f'initial_{key}'] = start
                    base = anchor[f'initial_{key}']
                    target[key] = start * (anchor[key] / base) if base else anchor[key]
            target['params'] = [p]
            optimizer.add_param_group(target)
            target = optimizer.param_groups[-1]
            index = len(optimizer.param_groups) - 1
            for scheduler in schedulers:
                if _optimizer_of(scheduler) is optimizer:
                    # insert, not append: mmengine's OptimWrapper.param_groups ends with a pseudo
                    # group (base_param_settings, for logging) that schedulers also track
                    key = scheduler.param_name
                    scheduler.base_values.insert(index, target.get(f'initial_{key}', target[key]))
                    if isinstance(getattr(scheduler, '_last_value', None), list):
                        scheduler._last_value.insert(index, target[key])
        else:
            target['params'].append(p)
        added.append(name)
    return added, removed


def _optimizer_of(scheduler):
    opt = scheduler.optimizer
    return getattr(opt, 'optimizer', opt)


def flatten_schedulers(param_schedulers) -> list:
    if param_schedulers is None:
        return []
    if isinstance(param_schedulers, dict):
        return [s for v in param_schedulers.values() for s in flatten_schedulers(v)]
    if isinstance(param_schedulers, (list, tuple)):
        return list(param_schedulers)
    return [param_schedulers]


def group_names(optimizer: Optimizer, model: nn.Module) -> List[List[str]]:
    """Parameter names per group (to rebuild the same groups on resume)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in g['params']] for g in optimizer.param_groups]


def arrange_groups(optimizer: Optimizer, model: nn.Module, saved: List[List[str]]) -> None:
    """Put the model's parameters into groups exactly as ``saved`` names them (same order), so that
    the saved optimizer state loads onto the right parameters; missing groups are added (their
    hyper-parameters come with the optimizer state that is loaded next)."""
    params = dict(model.named_parameters())
    missing = sorted({n for names in saved for n in names} - set(params))
    if missing:
        raise KeyError(f'the checkpoint\'s optimizer refers to parameters the model does not have: {missing[:5]}')
    template = {k: v for k, v in optimizer.param_groups[0].items() if k != 'params'}
    for state_key in list(optimizer.state):
        optimizer.state.pop(state_key)
    for i, names in enumerate(saved):
        if i < len(optimizer.param_groups):
            optimizer.param_groups[i]['params'] = [params[n] for n in names]
        else:
            optimizer.param_groups.append(dict(template, params=[params[n] for n in names]))
    del optimizer.param_groups[len(saved):]
