"""Training cost of DyRep against the plain model, RepVGG-style and DBB on the toolboxes' own models
(paper Tables 2-3, "Cost"): the library behind ``tools/analysis/training_cost.py`` (and the models and
evolution :mod:`.overheads` measures).

* models: :func:`build_model` (an mmpretrain classifier or an mmdet Faster R-CNN with a DyRepResNet
  backbone), :func:`grow_static` (RepVGG / DBB branches on every candidate conv, Rep with BN
  calibration), :func:`evolve_dyrep` (saliency-chosen grows until the backbone's params or FLOPs reach a
  ratio, each grow's cost known in advance from :func:`grow_cost`), :func:`replay_dyrep` (the recorded
  grows and cuts of an earlier run, :func:`recorded_steps`);
* measurement: :class:`Runner` (one mode's train step: preprocessing + forward + loss + backward + SGD,
  timed between device syncs, and its peak tensor memory), :func:`run_model` (every mode of one model,
  interleaved), :func:`run_blocks` (one grown 3×3 conv, per branch vs merged), :func:`run_avg` (the
  1×1–AVG branch's average vs ``avg_pool2d``); :func:`check_targets` judges the ratios (:data:`TARGETS`).

The command line (``--help``, the modes, what a step is, how memory is measured) is described in
``tools/analysis/training_cost.py``; the tables built from it in docs/benchmarks.md.
"""
import copy
import importlib
import json
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from mmdyrep.datasets.batches import random_batch
from mmdyrep.models.dyrep_resnet import STATIC_BRANCHES, backbone_of
from .timing import sync, timed

MODELS = {  # name: (toolbox, depth)
    'r18-cls': ('mmpretrain', 18),
    'r50-cls': ('mmpretrain', 50),
    'r18-det': ('mmdet', 18),
    'r50-det': ('mmdet', 50),
}
CONFIGS = {
    ('mmpretrain', 18): 'mmpretrain::resnet/resnet18_8xb32_in1k.py',
    ('mmpretrain', 50): 'mmpretrain::resnet/resnet50_8xb32_in1k.py',
    ('mmdet', 18): 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    ('mmdet', 50): 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
}
BASE_MODES = ('origin', 'repvgg', 'dbb', 'dyrep', 'dyrep-f')
#: DyRep structures: grown until the backbone's params (``dyrep``) or FLOPs (``dyrep-f``) reach the target ratio
DYREP_MODES = {'dyrep': 'params', 'dyrep-f': 'flops'}
#: mode: (op, limit, aim) of its step time as a ratio to origin
TARGETS = {'dyrep': ('<=', 1.2, 1.1), 'dyrep-f': ('<=', 1.2, 1.1), 'dbb': ('>=', 1.5, None)}


# ---------------------------------------------------------------------- models and data
def _config_file(spec: str) -> str:
    from mmengine.utils import get_installed_path
    package, path = spec.split('::')
    return osp.join(get_installed_path(package), '.mim', 'configs', path)


def build_model(toolbox: str, depth: int, rep_mode: str, device: str, seed: int = 0) -> nn.Module:
    """The toolbox's own model (Faster R-CNN R-FPN / ImageClassifier) with a DyRepResNet backbone."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    importlib.import_module(f'mmdyrep.models.{toolbox}_resnet')
    cfg = Config.fromfile(_config_file(CONFIGS[(toolbox, depth)]))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('pretrained', None)
    backbone = model_cfg.backbone
    backbone.type = 'DyRepResNet'
    backbone.depth = depth
    backbone.init_cfg = None
    backbone.zero_init_residual = False  # from scratch: gradients must reach the 3x3 convs
    backbone.rep_mode = rep_mode
    if toolbox == 'mmdet' and depth < 50:
        model_cfg.neck.in_channels = [64, 128, 256, 512]
    init_default_scope(toolbox)
    registry = importlib.import_module(f'{toolbox}.registry').MODELS
    torch.manual_seed(seed)
    model = registry.build(model_cfg)
    model.init_weights()
    return model.to(device)


def set_threads(args) -> bool:
    """``--threads`` (default: 1 on CPU, steadier on a shared machine; torch's own on CUDA);
    returns whether the device is CUDA."""
    gpu = args.device.startswith('cuda')
    if args.threads is None:
        args.threads = 0 if gpu else 1
    if args.threads:
        torch.set_num_threads(args.threads)
    return gpu


def make_batch(toolbox: str, size, batch_size: int, seed: int = 0) -> dict:
    """A batch in the toolbox's data format: random images; 4 boxes + labels or class labels."""
    return random_batch(toolbox, size, batch_size, seed, num_boxes=4, min_box=16)


def loss_of(model, data) -> torch.Tensor:
    data = model.data_preprocessor(data, True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    return loss


def conv_sizes(backbone: nn.Module, input_shape: Sequence[int]) -> Dict[str, Tuple[Tuple[int, int], Tuple[int, int]]]:
    """``{conv name: ((input H, W), (output H, W))}`` of every K×K conv for one input."""
    from mmdyrep.core import growable_convs
    sizes, hooks = {}, []
    for name, conv in growable_convs(backbone).items():
        hooks.append(conv.register_forward_hook(
            lambda m, args, out, name=name: sizes.__setitem__(name, (tuple(args[0].shape[-2:]),
                                                                     tuple(out.shape[-2:])))))
    was = backbone.training
    backbone.eval()
    ref = next(backbone.parameters())
    with torch.no_grad():
        backbone(torch.zeros(1, *input_shape, dtype=ref.dtype, device=ref.device))
    backbone.train(was)
    for h in hooks:
        h.remove()
    return sizes


def conv_positions(backbone: nn.Module, name: str, sizes: dict) -> Tuple[int, int]:
    """(input positions, output positions) of conv ``name`` from the :func:`conv_sizes` of the plain
    backbone: a nested conv (``.origin``, ``.branches.1x1_kxk.kxk``) has the sizes of the conv it grew
    from, but the K×K of a ``1x1_kxk`` branch reads its input padded by its block's padding."""
    from .history import grown_conv
    outer = grown_conv(name)
    (h, w), (h_out, w_out) = sizes[outer]
    path = outer
    for part in name[len(outer):].split('.')[1:]:
        if part == 'kxk' and path.endswith('.branches.1x1_kxk'):
            pad = backbone.get_submodule(path[:-len('.branches.1x1_kxk')]).spec.padding
            h, w = h + 2 * pad, w + 2 * pad
        path = f'{path}.{part}'
    return h * w, h_out * w_out


def grow_cost(backbone: nn.Module, name: str, sizes: dict) -> Tuple[int, int]:
    """(parameters, conv MACs per input) that a grow of conv ``name`` adds: every branch that fits,
    plus the origin's new bias; MACs as ``models.complexity.count`` counts them
    (:func:`mmdyrep.core.branches.branch_macs`), at the sizes of :func:`conv_positions`."""
    from mmdyrep.core import ConvSpec, build_branch
    from mmdyrep.core.branches import branch_macs
    conv = backbone.get_submodule(name)
    s = ConvSpec.from_conv(conv, name)
    params = sum(p.numel() for b in s.valid_branches()
                 for p in build_branch(b, s, backbone.dyrep_norm_factory).parameters())
    params += s.out_channels if conv.bias is None else 0
    p_in, p_out = conv_positions(backbone, name, sizes)
    return params, sum(branch_macs(b, s, p_in, p_out) for b in s.valid_branches())


def dyrep_evolver(backbone: nn.Module):
    """The Evolver as ``DyRepHook`` builds it by default (the hook's defaults for every argument it passes
    on, :func:`mmdyrep.engine.update.evolver_kwargs`: the default metric, one grow per update,
    ``max_depth=1``, ...), growing the backbone's candidates."""
    from mmdyrep.core import Evolver
    from mmdyrep.engine.dyrep_hook import DyRepHook
    from mmdyrep.engine.update import evolver_kwargs
    return Evolver(backbone, candidate_filter=backbone.is_grow_candidate, **evolver_kwargs(DyRepHook()))


def calibrator(model, calib_batches) -> Callable[[nn.Module], None]:
    """BN calibration on ``calib_batches`` (through the data preprocessor, as the hook does)."""
    inputs = [model.data_preprocessor(b, True)['inputs'] for b in calib_batches]

    def calibrate(bb):
        for x in inputs:
            bb(x)
    return calibrate


def evolve_dyrep(model, data, calib_batches, ratio: float, reference: dict, input_shape, key: str = 'params',
                 max_grows: int = 64):
    """Grow the top conv by the default saliency (one per round, scored on ``data``, BN calibration on
    ``calib_batches``) while that brings the backbone's ``key`` ('params' or 'flops') closer to ``ratio`` x
    ``reference[key]``.
    Returns the Evolver, the grown conv names and the steps (``{'grown': [...], 'cut': {block: [...]}}``
    each, what :func:`replay_dyrep` repeats)."""
    backbone = backbone_of(model)
    evolver = dyrep_evolver(backbone)
    calibrate = calibrator(model, calib_batches)
    sizes = conv_sizes(backbone, input_shape)
    target = ratio * reference[key]
    now = dict(reference)
    grown, steps = [], []
    model.train()
    while len(grown) < max_grows:
        model.zero_grad(set_to_none=True)
        loss_of(model, data).backward()
        evolver.record()
        top = evolver.scores.select(1)
        if not top:
            break
        added = dict(zip(('params', 'flops'), grow_cost(backbone, top[0], sizes)))
        if abs(now[key] + added[key] - target) >= abs(now[key] - target):
            break  # the next grow would not get closer to the target
        report = evolver.step(calibrate=calibrate)
        grown += list(report['grown'])
        steps.append({'grown': list(report['grown']), 'cut': report['cut']})
        now = {k: now[k] + added[k] for k in now}
    evolver.scores.reset()
    model.zero_grad(set_to_none=True)
    model.train()
    return evolver, grown, steps


class ReplayError(ValueError):
    """An earlier run's JSON (``--replay``) does not hold the structure asked for."""


def recorded_steps(previous: dict, name: str, mode: str, path: str) -> list:
    """The grow/cut steps of ``mode`` on model ``name`` in an earlier ``--out`` JSON (its ``<mode>_steps``;
    a JSON without them: one grow per recorded grown conv, nothing cut). :class:`ReplayError` naming
    ``path``, the mode and the model if it has no such structure."""
    res = previous.get('results', {}).get(name)
    if res is None or res.get(f'{mode}_grown') is None:
        raise ReplayError(f"--replay {path}: no '{mode}' structure for model '{name}' in it "
                         f"(it has: {', '.join(previous.get('results', {})) or 'no model results'})")
    return res.get(f'{mode}_steps') or [{'grown': [g], 'cut': {}} for g in res[f'{mode}_grown']]


def replay_dyrep(model, steps, calib_batches):
    """Repeat recorded DyRep steps: the same convs grown (every branch that fits, Rep with BN
    calibration, as ``Evolver.step``) and the same branches cut, in order. Returns the Evolver and
    the grown conv names, as :func:`evolve_dyrep`."""
    from mmdyrep.core import cut_branches
    backbone = backbone_of(model)
    evolver = dyrep_evolver(backbone)
    calibrate = calibrator(model, calib_batches)
    model.train()
    for step in steps:
        evolver.grow(step['grown'], calibrate)
        for block, branches in step.get('cut', {}).items():
            cut_branches(backbone, block, branches)
        evolver.structure_changed()
    model.train()
    return evolver, [g for step in steps for g in step['grown']]


def grow_static(model, mode: str, calib_batches) -> None:
    """RepVGG / DBB branches (Table 1, gamma 1 as DBB) on every candidate conv of a built model, keeping
    its function (Rep with BN calibration): what ``DyRepResNet(rep_mode=mode)`` does around loaded weights."""
    from mmdyrep.core import grow
    backbone = backbone_of(model)
    grow(backbone, list(backbone.dyrep_candidates()), STATIC_BRANCHES[mode], gamma_init=backbone.static_gamma_init,
         calibrate=calibrator(model, calib_batches), skip_unfit=True)
    backbone.rep_mode = mode


def enable_fast_forward(model, enabled: bool = True) -> int:
    """``fast_forward=enabled`` on the model's DyRepResNet (as a config would set it) and on its blocks;
    returns the number of blocks. The default is on: the plain mode names time the per-branch
    reference (``enabled=False``), ``<mode>+fast`` what users get."""
    from mmdyrep.core.block import set_fast_forward
    from mmdyrep.models import DyRepResNetMixin
    for module in model.modules():
        if isinstance(module, DyRepResNetMixin):
            module.fast_forward = enabled
    return set_fast_forward(model, enabled)


# ---------------------------------------------------------------------- measurement
def state_bytes(model, optimizer) -> int:
    """Resident model state: parameters, buffers and optimizer state, in bytes."""
    total = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return total


class Runner:
    """One model copy in one mode: its optimizer, its batch and (for DyRep) its evolver."""

    def __init__(self, name, model, data, device, evolver=None, lr=1e-4):
        self.name, self.model, self.data, self.device, self.evolver = name, model, data, device, evolver
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        self.times = []

    def step(self) -> None:
        loss = loss_of(self.model, self.data)
        loss.backward()
        if self.evolver is not None:
            self.evolver.record()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed_step(self) -> float:
        return timed(self.step, self.device)[0]

    def peak_step_bytes(self) -> int:
        """Peak tensor memory allocated during one step above the memory allocated at its start."""
        if self.device.startswith('cuda'):
            sync(self.device)
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            self.step()
            sync(self.device)
            return torch.cuda.max_memory_allocated() - start
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.step()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
        events.sort(key=lambda e: e.start_ns())
        now = peak = 0
        for e in events:
            now += e.nbytes()
            peak = max(peak, now)
        return peak


def build_modes(name: str, args, data, calib, flops_shape):
    """Every mode of model ``name`` from the same initial weights, its function kept (Rep): the models,
    the DyRep modes' evolvers, what was grown (``<mode>_grown``, ``<mode>_steps``) and the reference
    (plain backbone) params / FLOPs."""
    from mmdyrep.models.complexity import count
    toolbox, depth = MODELS[name]
    models, evolvers, info = {}, {}, {}
    origin = build_model(toolbox, depth, 'origin', args.device)
    reference = count(backbone_of(origin), flops_shape)
    for mode in args.modes:  # every mode from the same weights, its function kept (Rep): same head workload
        models[mode] = origin if mode == 'origin' else copy.deepcopy(origin)
        if mode in STATIC_BRANCHES:
            grow_static(models[mode], mode, calib)
        elif mode in DYREP_MODES and args.replay:
            steps = recorded_steps(args.previous, name, mode, args.replay)
            evolvers[mode], info[f'{mode}_grown'] = replay_dyrep(models[mode], steps, calib)
            info[f'{mode}_steps'] = steps
            info[f'{mode}_replayed_from'] = args.replay
        elif mode in DYREP_MODES:
            key = DYREP_MODES[mode]
            evolvers[mode], info[f'{mode}_grown'], info[f'{mode}_steps'] = evolve_dyrep(
                models[mode], data, calib, args.dyrep_params_ratio if key == 'params' else args.dyrep_flops_ratio,
                reference, flops_shape, key)
    return models, evolvers, info, reference


def run_model(name: str, args) -> dict:
    """Every mode of model ``name`` (``args``: the command line's options): backbone params / FLOPs /
    blocks per mode, then the step times (interleaved rounds, median after warm-up) and memory, with
    their ratios to origin."""
    from mmdyrep.core import iter_blocks
    from mmdyrep.models.complexity import count
    toolbox, depth = MODELS[name]
    size = tuple(args.det_size if toolbox == 'mmdet' else args.cls_size)
    batch_size = args.det_batch if toolbox == 'mmdet' else args.cls_batch
    data = make_batch(toolbox, size, batch_size, seed=0)
    calib = [make_batch(toolbox, size, batch_size, seed=100 + i) for i in range(args.calib_batches)]
    t0 = time.perf_counter()
    flops_shape = (3, *size)
    models, evolvers, info, reference = build_modes(name, args, data, calib, flops_shape)
    for mode, model in models.items():
        enable_fast_forward(model, False)  # the per-branch reference; '+fast' below is the default path
        bb = backbone_of(model)
        c = count(bb, flops_shape)
        info.setdefault('backbone', {})[mode] = {
            'params': c['params'], 'params_ratio': c['params'] / reference['params'], 'flops': c['flops'],
            'flops_ratio': c['flops'] / reference['flops'],
            'blocks': sum(1 for _ in iter_blocks(bb))}
    runners = [Runner(mode, model, data, args.device, evolvers.get(mode)) for mode, model in models.items()]
    if args.fast == 'on':
        for mode in args.modes:
            if mode == 'origin':
                continue
            model = copy.deepcopy(models[mode])
            enable_fast_forward(model)
            evolver = None
            if mode in DYREP_MODES:
                evolver = dyrep_evolver(backbone_of(model))
            runners.append(Runner(f'{mode}+fast', model, data, args.device, evolver))
    for r in runners:
        r.model.train()
    info['build_s'] = time.perf_counter() - t0
    rounds = args.warmup + args.repeats
    for i in range(rounds):
        order = runners[i % len(runners):] + runners[:i % len(runners)]
        last = {}
        for r in order:
            last[r.name] = r.timed_step()
            if i >= args.warmup:
                r.times.append(last[r.name])
        print(f'  {name}: round {i + 1}/{rounds}{" (warm-up)" if i < args.warmup else ""} '
              + ' '.join(f'{r.name}={last[r.name]:.3f}s' for r in runners), flush=True)
    results = {}
    for r in runners:
        results[r.name] = {'median_s': statistics.median(r.times), 'min_s': min(r.times), 'times_s': r.times}
        if args.memory:
            extra = r.peak_step_bytes()
            resident = state_bytes(r.model, r.optimizer)
            results[r.name].update(step_peak_extra_mb=extra / 2**20, state_mb=resident / 2**20,
                                   peak_mb=(extra + resident) / 2**20)
    base = results.get('origin')
    for res in results.values():
        if base:
            res['time_ratio'] = res['median_s'] / base['median_s']
            if 'peak_mb' in res:
                res['memory_ratio'] = res['peak_mb'] / base['peak_mb']
    return {'toolbox': toolbox, 'depth': depth, 'input': [batch_size, 3, *size], 'modes': results, **info}


def _interleaved_medians(runs, args) -> Dict[str, float]:
    """``runs``: (name, fn) pairs; ``fn().sum().backward()`` of each, interleaved, synchronised; the median
    milliseconds of ``args.repeats`` rounds after ``args.warmup``."""
    times = {name: [] for name, _ in runs}
    for i in range(args.warmup + args.repeats):
        for name, fn in runs:
            seconds, _ = timed(lambda: fn().sum().backward(), args.device)
            if i >= args.warmup:
                times[name].append(seconds)
    return {name: statistics.median(v) * 1e3 for name, v in times.items()}


def run_blocks(shapes, args) -> dict:
    """One 3x3 conv (C->C, stride 1) at N x C x H x W: forward + backward of the plain conv, of the DyRep
    block grown from it with every branch run per branch, and of the same block through ``merged_forward``
    (the default fast forward); BNs in eval mode (``--block-bn eval``, as mmdet's norm_eval: one merged
    conv) or training mode (``train``: the BNs grouped); interleaved, median of ``--repeats`` after
    ``--warmup``."""
    from mmdyrep.core import grow
    from mmdyrep.core.fast_block import plan
    out = {}
    for shape in shapes:
        c, h, w, n = (int(v) for v in shape.split(','))
        torch.manual_seed(0)
        plain = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False)).to(args.device)
        grown = copy.deepcopy(plain)
        grow(grown, ['0'])
        fast = copy.deepcopy(grown)
        enable_fast_forward(grown, False)
        enable_fast_forward(fast)
        for m in (plain, grown, fast):
            m.train()
            for bn in m.modules():
                if isinstance(bn, nn.BatchNorm2d) and args.block_bn == 'eval':
                    bn.eval()
        x = torch.randn(n, c, h, w, device=args.device, requires_grad=True)
        res = _interleaved_medians((('plain', lambda: plain(x)), ('per-branch', lambda: grown(x)),
                                    ('merged', lambda: fast(x))), args)
        res['merged_parts'], res['separate_parts'] = plan(fast[0], x)
        out[shape] = res
        print(f'  block C={c} {n}x{h}x{w}: plain {res["plain"]:.2f} ms, per-branch {res["per-branch"]:.2f} ms, '
              f'merged {res["merged"]:.2f} ms (separate: {res["separate_parts"] or "none"})', flush=True)
    return out


def run_avg(shapes, args) -> dict:
    """The K×K average of a 1×1–AVG branch (input already padded) as ``F.avg_pool2d`` and as the
    branch runs it (``Conv1x1AvgBranch.average``: a depthwise conv on CPU), forward + backward,
    interleaved, median of ``--repeats`` after ``--warmup``; and their largest difference."""
    import torch.nn.functional as F
    from mmdyrep.core import ConvSpec, build_branch
    from mmdyrep.core.branches import default_norm_factory
    out = {}
    for shape in shapes:
        n, c, h, w, k, s = (int(v) for v in shape.split(','))
        spec = ConvSpec.from_conv(nn.Conv2d(c, c, k, s, k // 2, bias=False))
        branch = build_branch('1x1_avg', spec, default_norm_factory).to(args.device)
        p = k // 2
        y = torch.randn(n, c, h + 2 * p, w + 2 * p, device=args.device, requires_grad=True)
        res = _interleaved_medians((('avg_pool2d', lambda: F.avg_pool2d(y, k, s)),
                                    ('branch', lambda: branch.average(y))), args)
        with torch.no_grad():
            res['max_abs_diff'] = (F.avg_pool2d(y, k, s) - branch.average(y)).abs().max().item()
        out[shape] = res
        print(f'  average {k}x{k}/{s} on {n}x{c}x{h}x{w}: avg_pool2d {res["avg_pool2d"]:.2f} ms, '
              f'branch {res["branch"]:.2f} ms, max |diff| {res["max_abs_diff"]:.1e}', flush=True)
    return out


def meets(value: float, op: str, limit: float) -> bool:
    """Whether ``value`` meets a target ``op limit`` (``op``: ``'<='`` or ``'>='``)."""
    return value <= limit if op == '<=' else value >= limit


def check_targets(results: dict) -> List[dict]:
    """Each model's DyRep / DBB step-time ratio (and its ``+fast`` twin's) judged against :data:`TARGETS`;
    DBB's ``+fast`` is informative only (the fast path removes the cost DBB is measured for)."""
    checks = []
    for name, res in results.items():
        for mode, (op, limit, aim) in TARGETS.items():
            for variant in (mode, f'{mode}+fast'):
                if variant not in res['modes'] or 'time_ratio' not in res['modes'][variant]:
                    continue
                ratio = res['modes'][variant]['time_ratio']
                checks.append({'model': name, 'mode': variant, 'ratio': ratio, 'target': f'{op} {limit}',
                               'aim': aim, 'pass': meets(ratio, op, limit),
                               'informative': variant.endswith('+fast') and mode == 'dbb'})
    return checks


def write_json(args, info: dict, **payload) -> None:
    """With ``--out``: the machine, the command line, the arguments and ``payload`` as JSON."""
    if not args.out:
        return
    with open(args.out, 'w') as f:
        json.dump({'machine': info, 'command': ' '.join(sys.argv), 'args': vars(args), **payload}, f, indent=1)
    print(f'wrote {args.out}')


def quiet_mmengine() -> None:
    """No INFO lines from mmengine (e.g. every parameter's init) between the measurements."""
    import logging
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)


__all__ = ['BASE_MODES', 'DYREP_MODES', 'MODELS', 'TARGETS', 'ReplayError', 'Runner', 'build_model', 'build_modes',
           'calibrator', 'check_targets', 'conv_positions', 'conv_sizes', 'dyrep_evolver', 'enable_fast_forward',
           'evolve_dyrep', 'grow_cost', 'grow_static', 'loss_of', 'make_batch', 'meets', 'quiet_mmengine',
           'recorded_steps', 'replay_dyrep', 'run_avg', 'run_blocks', 'run_model', 'set_threads', 'state_bytes',
           'write_json']
