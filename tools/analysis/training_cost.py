"""Training cost of DyRep against the plain model, RepVGG-style and DBB (paper Tables 2-3, "Cost").

    python tools/analysis/training_cost.py [--models r18-cls r50-cls r18-det r50-det]
        [--repeats 5] [--device cpu|cuda] [--out cost.json]
    python tools/analysis/training_cost.py --block-shapes 256,50,84,2 ...   # one block: per branch vs merged
    python tools/analysis/training_cost.py --avg-shapes 8,64,56,56,3,1 ...  # the 1x1-AVG branch's average

For each model, one copy per re-parameterization mode, all from the same initial weights (so the
detector heads see the same features and do the same work):

* ``origin``  the plain ResNet;
* ``repvgg``  K×K + 1×1 + residual on every candidate conv (Table 1), grown with Rep (function
  kept, BN calibration) as ``DyRepResNet(rep_mode='repvgg')`` does around loaded weights;
* ``dbb``     K×K + 1×1–K×K + 1×1–AVG + 1×1 on every candidate conv (Table 1), likewise;
* ``dyrep``   the plain ResNet after N grows (Sec. 4.1): each grow scores the candidates with
  the default saliency (``taylor`` over each conv with its BN) on a real batch of the model's own
  loss, grows the top one into a DyRep block with every branch that fits (nested grows allowed once,
  ``max_depth=1`` as the hook),
  calibrates the new BNs on real batches and keeps the output (Eq. 6); grows continue while they
  bring the backbone's parameters closer to ``--dyrep-params-ratio`` (1.25: Table 3's average
  params, ResNet-50) x the plain backbone's. The ratios reached are reported. Its step also scores
  the candidates (``Evolver.record()``), as every DyRep training step does.
* ``dyrep-f`` the same, grown to ``--dyrep-flops-ratio`` (1.25) x the plain backbone's FLOPs
  instead: the saliency may pick convs with many FLOPs per parameter (early stages), so the
  params-sized structure can carry far more FLOPs than Table 3's (+23 % for ResNet-50).
* ``--replay OUT.json``: ``dyrep`` and ``dyrep-f`` repeat the grows and cuts that an earlier run's
  JSON recorded (``<mode>_steps``) instead of choosing by saliency: the same structure across
  commits, machines and devices.
* ``<mode>+fast``: the same model with the backbone's ``fast_forward=True``, the default that users get
  (:func:`mmdyrep.core.fast_block.merged_forward`: one K×K conv per block where the BNs use
  running statistics, e.g. mmdet's ``norm_eval=True``; with training-mode BNs the BNs grouped,
  :mod:`mmdyrep.core.grouped_block`, or the stem's 1×1–AVG branch pooled first). Same function and
  gradients as the per-branch forward, which the plain mode names run (``fast_forward=False``).

A *step* is data preprocessing + forward + loss + backward + SGD step (momentum 0.9) on a fixed
batch. Steps are interleaved round-robin across the modes (the order rotates every round), after
``--warmup`` rounds; the table gives the median over ``--repeats`` rounds and its ratio to origin.

Memory (per mode, one extra step after timing): resident model state (parameters, buffers,
optimizer state) + the peak of the tensor memory allocated during the step above what was
allocated when it began (activations, gradients, temporaries). On CUDA the step peak is
``torch.cuda.max_memory_allocated`` - ``memory_allocated`` at the step start; on CPU it is the
running sum of the allocator events that ``torch.profiler`` records (``profile_memory=True``):
tensor bytes, not the process RSS.

Targets (pass/fail): DyRep step time with the paper-sized structure <= 1.2x origin (aim 1.1x);
DBB >= 1.5x origin (the cost DyRep avoids; the paper: ~1.7x GPU days on ResNet-18).
"""
import argparse
import copy
import importlib
import json
import os.path as osp
import platform
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from mmdyrep.datasets.batches import random_batch  # noqa: E402
from mmdyrep.models.dyrep_resnet import STATIC_BRANCHES, backbone_of  # noqa: E402

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
TARGETS = {'dyrep': ('<=', 1.2, 1.1), 'dyrep-f': ('<=', 1.2, 1.1), 'dbb': ('>=', 1.5, None)}


# ---------------------------------------------------------------------- models and data
def _config_file(spec: str) -> str:
    from mmengine.utils import get_installed_path
    package, path = spec.split('::')
    return osp.join(get_installed_path(package), '.mim', 'configs', path)


def build_model(toolbox: str, depth: int, rep_mode: str, device: str, seed: int = 0):
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


def num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_sizes(backbone, input_shape) -> dict:
    """``{conv name: (input positions, output positions)}`` of every K×K conv for one input."""
    from mmdyrep.core import growable_convs
    sizes, hooks = {}, []
    for name, conv in growable_convs(backbone).items():
        hooks.append(conv.register_forward_hook(
            lambda m, args, out, name=name: sizes.__setitem__(name, (args[0].shape[-2] * args[0].shape[-1],
                                                                     out.shape[-2] * out.shape[-1]))))
    was = backbone.training
    backbone.eval()
    ref = next(backbone.parameters())
    with torch.no_grad():
        backbone(torch.zeros(1, *input_shape, dtype=ref.dtype, device=ref.device))
    backbone.train(was)
    for h in hooks:
        h.remove()
    return sizes


def grow_cost(backbone, name: str, sizes: dict) -> tuple:
    """(parameters, conv MACs per input) that a grow of conv ``name`` adds: every branch that fits,
    plus the origin's new bias; MACs as ``models.complexity.count`` counts them (convs only). A
    nested conv (``.origin``, ``.branches.1x1_kxk.kxk``) has the sizes of the conv it grew from."""
    from mmdyrep.analysis.history import grown_conv
    from mmdyrep.core import ConvSpec, build_branch
    conv = backbone.get_submodule(name)
    s = ConvSpec.from_conv(conv, name)
    params = sum(p.numel() for b in s.valid_branches()
                 for p in build_branch(b, s, backbone.dyrep_norm_factory).parameters())
    params += s.out_channels if conv.bias is None else 0
    p_in, p_out = sizes[grown_conv(name)]
    ci, co, k, g = s.in_channels, s.out_channels, s.kernel_size, s.groups
    macs = {'1x1_kxk': ci * ci // g * p_in + ci * co * k * k // g * p_out,
            '1x1_avg': ci * co // g * p_in + (co * k * k * p_out if s.dilation > 1 else 0),
            '1x1': ci * co // g * p_out, '1xk': ci * co * k // g * p_out, 'kx1': ci * co * k // g * p_out,
            'residual': 0}
    return params, sum(macs[b] for b in s.valid_branches())


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


def dyrep_evolver(backbone):
    """The Evolver as the hook builds it by default (the default metric, one grow per update, ``max_depth=1``)."""
    from mmdyrep.core import DEFAULT_METRIC, Evolver
    return Evolver(backbone, metric=DEFAULT_METRIC, topk=1, candidate_filter=backbone.is_grow_candidate,
                   max_depth=1)


def calibrator(model, calib_batches):
    """BN calibration on ``calib_batches`` (through the data preprocessor, as the hook does)."""
    inputs = [model.data_preprocessor(b, True)['inputs'] for b in calib_batches]

    def calibrate(bb):
        for x in inputs:
            bb(x)
    return calibrate


def recorded_steps(previous: dict, name: str, mode: str, path: str) -> list:
    """The grow/cut steps of ``mode`` on model ``name`` in an earlier ``--out`` JSON (its ``<mode>_steps``;
    a JSON without them: one grow per recorded grown conv, nothing cut)."""
    res = previous.get('results', {}).get(name)
    if res is None or res.get(f'{mode}_grown') is None:
        raise SystemExit(f"--replay {path}: no '{mode}' structure for model '{name}' in it "
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
def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def state_bytes(model, optimizer) -> int:
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
        _sync(self.device)
        t0 = time.perf_counter()
        self.step()
        _sync(self.device)
        return time.perf_counter() - t0

    def peak_step_bytes(self) -> int:
        """Peak tensor memory allocated during one step above the memory allocated at its start."""
        if self.device.startswith('cuda'):
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            self.step()
            _sync(self.device)
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


def run_model(name: str, args) -> dict:
    from mmdyrep.core import iter_blocks
    from mmdyrep.models.complexity import count
    toolbox, depth = MODELS[name]
    size = tuple(args.det_size if toolbox == 'mmdet' else args.cls_size)
    batch_size = args.det_batch if toolbox == 'mmdet' else args.cls_batch
    data = make_batch(toolbox, size, batch_size, seed=0)
    calib = [make_batch(toolbox, size, batch_size, seed=100 + i) for i in range(args.calib_batches)]
    t0 = time.perf_counter()
    models, evolvers, info = {}, {}, {}
    origin = build_model(toolbox, depth, 'origin', args.device)
    flops_shape = (3, *size)
    reference = count(backbone_of(origin), flops_shape)
    origin_params = reference['params']
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
    for mode, model in models.items():
        enable_fast_forward(model, False)  # the per-branch reference; '+fast' below is the default path
        bb = backbone_of(model)
        c = count(bb, flops_shape)
        info.setdefault('backbone', {})[mode] = {
            'params': c['params'], 'params_ratio': c['params'] / origin_params, 'flops': c['flops'],
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


def run_blocks(shapes, args) -> dict:
    """One 3x3 conv (C->C, stride 1) at N x C x H x W: forward + backward of the plain conv, of the DyRep
    block grown from it with every branch run per branch, and of the same block through ``merged_forward``
    (the default fast forward); BNs in eval mode (``--block-bn eval``, as mmdet's norm_eval: one merged
    conv) or training mode (``train``: the BNs grouped); interleaved, median of ``--repeats`` after
    ``--warmup``."""
    from torch import nn
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
        times = {'plain': [], 'per-branch': [], 'merged': []}
        for i in range(args.warmup + args.repeats):
            for name, m in (('plain', plain), ('per-branch', grown), ('merged', fast)):
                _sync(args.device)
                t0 = time.perf_counter()
                m(x).sum().backward()
                _sync(args.device)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
        res = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        res['merged_parts'], res['separate_parts'] = plan(fast[0], x)
        out[shape] = res
        print(f'  block C={c} {n}x{h}x{w}: plain {res["plain"]:.2f} ms, per-branch {res["per-branch"]:.2f} ms, '
              f'merged {res["merged"]:.2f} ms (separate: {res["separate_parts"] or "none"})', flush=True)
    return out


def run_avg(shapes, args) -> dict:
    """The K×K average of a 1×1–AVG branch (input already padded) as ``F.avg_pool2d`` and as the
    branch runs it (``Conv1x1AvgBranch._average``: a depthwise conv on CPU), forward + backward,
    interleaved, median of ``--repeats`` after ``--warmup``; and their largest difference."""
    import torch.nn.functional as F
    from torch import nn
    from mmdyrep.core import ConvSpec, build_branch
    from mmdyrep.core.branches import default_norm_factory
    out = {}
    for shape in shapes:
        n, c, h, w, k, s = (int(v) for v in shape.split(','))
        spec = ConvSpec.from_conv(nn.Conv2d(c, c, k, s, k // 2, bias=False))
        branch = build_branch('1x1_avg', spec, default_norm_factory).to(args.device)
        p = k // 2
        y = torch.randn(n, c, h + 2 * p, w + 2 * p, device=args.device, requires_grad=True)
        runs = (('avg_pool2d', lambda: F.avg_pool2d(y, k, s)), ('branch', lambda: branch._average(y)))
        times = {name: [] for name, _ in runs}
        for i in range(args.warmup + args.repeats):
            for name, fn in runs:
                _sync(args.device)
                t0 = time.perf_counter()
                fn().sum().backward()
                _sync(args.device)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
        res = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        with torch.no_grad():
            res['max_abs_diff'] = (F.avg_pool2d(y, k, s) - branch._average(y)).abs().max().item()
        out[shape] = res
        print(f'  average {k}x{k}/{s} on {n}x{c}x{h}x{w}: avg_pool2d {res["avg_pool2d"]:.2f} ms, '
              f'branch {res["branch"]:.2f} ms, max |diff| {res["max_abs_diff"]:.1e}', flush=True)
    return out


def check_targets(results: dict) -> list:
    checks = []
    for name, res in results.items():
        for mode, (op, limit, aim) in TARGETS.items():
            for variant in (mode, f'{mode}+fast'):
                if variant not in res['modes'] or 'time_ratio' not in res['modes'][variant]:
                    continue
                ratio = res['modes'][variant]['time_ratio']
                ok = ratio <= limit if op == '<=' else ratio >= limit
                checks.append({'model': name, 'mode': variant, 'ratio': ratio, 'target': f'{op} {limit}',
                               'aim': aim, 'pass': ok,
                               'informative': variant.endswith('+fast') and mode == 'dbb'})
    return checks


def machine() -> dict:
    cpu = ''
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), '')
    except OSError:
        pass
    import os
    out = {'nproc': os.cpu_count(), 'cpu': cpu, 'torch': torch.__version__, 'threads': torch.get_num_threads(),
           'python': platform.python_version()}
    if torch.cuda.is_available():
        out['gpu'] = torch.cuda.get_device_name()
    return out


def print_table(results: dict, checks: list) -> None:
    print()
    print(f'{"model":8} {"mode":12} {"params":>7} {"x":>5} {"GFLOPs":>7} {"x":>5} {"step s":>7} {"x origin":>8} '
          f'{"peak MB":>8} {"x origin":>8}')
    for name, res in results.items():
        for mode, m in res['modes'].items():
            bb = res['backbone'].get(mode.split('+')[0], {})
            print(f'{name:8} {mode:12} {bb.get("params", 0) / 1e6:7.2f} {bb.get("params_ratio", 0):5.2f} '
                  f'{bb.get("flops", 0) / 1e9:7.3f} {bb.get("flops_ratio", 0):5.2f} {m["median_s"]:7.3f} '
                  f'{m.get("time_ratio", float("nan")):8.2f} {m.get("peak_mb", float("nan")):8.0f} '
                  f'{m.get("memory_ratio", float("nan")):8.2f}')
        for mode in DYREP_MODES:
            if res.get(f'{mode}_grown') is not None:
                print(f'{"":8} {mode} grew {len(res[f"{mode}_grown"])} convs: {", ".join(res[f"{mode}_grown"])}')
    print('(params / GFLOPs: backbone, conv+linear MACs for one input of the benchmark size)')
    print()
    for c in checks:
        aim = f', aim {c["aim"]}' if c['aim'] else ''
        note = ' (informative: the fast path removes the cost DBB is measured for)' if c['informative'] else ''
        print(f'{"PASS" if c["pass"] else "FAIL"}  {c["model"]:8} {c["mode"]:11} {c["ratio"]:.2f}x origin '
              f'(target {c["target"]}{aim}){note}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--modes', nargs='+', default=list(BASE_MODES), choices=list(BASE_MODES))
    p.add_argument('--fast', choices=('on', 'off'), default='on',
                   help='also time every mode but origin with the backbone\'s fast_forward=True (<mode>+fast)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--repeats', type=int, default=None, help='timed rounds (default 3 on CPU, 20 on CUDA)')
    p.add_argument('--warmup', type=int, default=None, help='untimed rounds (default 1 on CPU, 5 on CUDA)')
    p.add_argument('--cls-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help='classification input (default 112 112 on CPU, 224 224 on CUDA)')
    p.add_argument('--cls-batch', type=int, default=None, help='default 8 on CPU, 64 on CUDA')
    p.add_argument('--det-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                   help='detection input (default 256 320 on CPU, 800 1216 on CUDA)')
    p.add_argument('--det-batch', type=int, default=2)
    p.add_argument('--calib-batches', type=int, default=2, help='BN calibration batches per DyRep grow')
    p.add_argument('--dyrep-params-ratio', type=float, default=1.25,
                   help='dyrep: grow until the backbone has this many times the plain parameters '
                   '(Table 3 averages: 1.23 ResNet-50, 1.44 ResNet-18)')
    p.add_argument('--dyrep-flops-ratio', type=float, default=1.25,
                   help='dyrep-f: grow until the backbone has this many times the plain FLOPs '
                   '(Table 3 averages: 1.23 ResNet-50, 1.34 ResNet-18)')
    p.add_argument('--replay', default=None, metavar='OUT.json',
                   help="dyrep / dyrep-f: grow (and cut) exactly what an earlier run's --out JSON recorded, instead "
                   "of choosing by saliency: the same structure across commits, machines or devices")
    p.add_argument('--no-memory', dest='memory', action='store_false')
    p.add_argument('--block-shapes', nargs='+', default=None, metavar='C,H,W,N',
                   help='instead of the models: time one grown 3x3 conv per shape, per branch vs merged_forward')
    p.add_argument('--block-bn', choices=('eval', 'train'), default='eval',
                   help='--block-shapes: the BNs in eval mode (mmdet norm_eval) or training mode')
    p.add_argument('--avg-shapes', nargs='+', default=None, metavar='N,C,H,W,K,S',
                   help="time the 1x1-AVG branch's KxK average against avg_pool2d instead")
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default on CPU: 1, steadier on a shared machine; 0: torch default)')
    p.add_argument('--out', default=None, help='write the results as JSON')
    args = p.parse_args(argv)
    gpu = set_threads(args)
    args.repeats = args.repeats or (20 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    args.cls_size = args.cls_size or ([224, 224] if gpu else [112, 112])
    args.cls_batch = args.cls_batch or (64 if gpu else 8)
    args.det_size = args.det_size or ([800, 1216] if gpu else [256, 320])
    if 'origin' not in args.modes:
        args.modes = ['origin'] + args.modes
    args.previous = None
    if args.replay:
        try:
            with open(args.replay) as f:
                args.previous = json.load(f)
        except (OSError, ValueError) as e:
            p.error(f'--replay {args.replay}: cannot read it as a training_cost.py --out JSON ({e})')
    return args


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


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_mmengine()
    info = machine()
    print(f'machine: {info}')
    if args.block_shapes:
        blocks = run_blocks(args.block_shapes, args)
        write_json(args, info, blocks=blocks)
        return 0
    if args.avg_shapes:
        write_json(args, info, averages=run_avg(args.avg_shapes, args))
        return 0
    results = {}
    for name in args.models:
        print(f'{name}: building {", ".join(args.modes)} ...', flush=True)
        results[name] = run_model(name, args)
    checks = check_targets(results)
    print_table(results, checks)
    write_json(args, info, results=results, targets=checks)
    return 0


if __name__ == '__main__':
    sys.exit(main())
