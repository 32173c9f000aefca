"""Training cost on torchvision ResNets: DyRep against the plain model, RepVGG and DBB, pure PyTorch.

Needs torch and torchvision only (no mmcv ops, no OpenMMLab toolbox), so it runs on any GPU machine
that has PyTorch: ``tools/analysis/torchvision_cost.py``. Modes (every one from the same initial
weights, its branches grown by :func:`mmdyrep.core.grow` with Rep, so each is the plain model's
function at the start):

* ``origin``: the plain model;
* ``repvgg``: K×K + 1×1 + residual on every K×K conv (Table 1's RepVGG set);
* ``dbb``: K×K + 1×1–K×K + 1×1–AVG + 1×1 on every K×K conv (DBB's set);
* ``dyrep``: a Table-3-sized structure fixed in advance, every branch type grown on
  :data:`TABLE3_CONVS` (ResNet-50: ``layer{1,2,3,4}.0.conv2``, +25 % parameters; ResNet-18:
  ``layer{2,3,4}.0.conv2``, +53 %), or the structure of a DyRep run (``structure=``, from a
  checkpoint's ``dyrep_structure`` or ``dyrep_history.json``).

Every mode but origin runs twice: with the per-branch reference forward and as users get it
(``+fast``: ``fast_forward``, the default). A train step is forward + cross-entropy + backward + SGD
(momentum 0.9) on a fixed random batch, in float32 or under bf16 autocast. Steps are interleaved
round-robin across modes; medians after warm-up; CUDA-synchronised; peak memory per mode from
``torch.cuda.max_memory_allocated`` over one step (on CPU: not measured). The aten ops of one train
step (:mod:`mmdyrep.analysis.ops`, a launch proxy) are counted on PyTorch's ``meta`` device (shapes
only: the same on any machine, with a GPU's choices) for the whole model on a small input and for one
3×3 block (C = 64) against the conv + BN it replaced.
"""
import copy
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmdyrep.core import grow, growable_convs
from mmdyrep.core.block import set_fast_forward
from mmdyrep.core.structure import apply_structure
from .ops import kernel_ops, train_step_ops
from .timing import machine, num_params, sync

ARCHS = ('resnet18', 'resnet50')
#: the convs grown with every branch type in the fixed ``dyrep`` structure
TABLE3_CONVS = {
    'resnet18': ('layer2.0.conv2', 'layer3.0.conv2', 'layer4.0.conv2'),
    'resnet50': ('layer1.0.conv2', 'layer2.0.conv2', 'layer3.0.conv2', 'layer4.0.conv2'),
}
STATIC = {'repvgg': ('1x1', 'residual'), 'dbb': ('1x1_kxk', '1x1_avg', '1x1')}
MODES = ('origin', 'repvgg', 'dbb', 'dyrep')
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16}


def build(arch: str, mode: str, structure: Optional[dict] = None, seed: int = 0) -> nn.Module:
    """The torchvision ``arch`` (1000 classes) in ``mode``, from the weights of ``seed``."""
    import torchvision
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(num_classes=1000)
    if mode in STATIC:
        grow(model, list(growable_convs(model)), STATIC[mode], gamma_init=1.0, skip_unfit=True)
    elif mode == 'dyrep' and structure is not None:
        apply_structure(model, structure)
    elif mode == 'dyrep':
        grow(model, list(TABLE3_CONVS[arch]))
    elif mode != 'origin':
        raise ValueError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
    return model


class _Runner:
    """One mode's model, SGD optimizer and fixed batch; :meth:`step` is one timed train step."""

    def __init__(self, name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: Optional[torch.dtype]):
        self.name, self.model, self.x, self.y, self.amp = name, model, x, y, amp
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        self.times: List[float] = []

    def _train_step(self) -> None:
        device = self.x.device.type
        with torch.autocast(device, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> float:
        sync(self.x.device)
        t0 = time.perf_counter()
        self._train_step()
        sync(self.x.device)
        return time.perf_counter() - t0

    def peak_mb(self) -> Optional[float]:
        if self.x.device.type != 'cuda':
            return None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self._train_step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20


def time_modes(models: Dict[str, nn.Module], batch: int, size: int, precision: str, device: str, warmup: int,
               repeats: int, log: Callable[[str], None] = print) -> Dict[str, dict]:
    """Median train-step time and peak memory of each model (interleaved rounds), with ratios to
    ``origin``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 1000, (batch, ), generator=g).to(device)
    runners = [_Runner(name, m, x, y, PRECISIONS[precision]) for name, m in models.items()]
    for m in models.values():
        m.train()
    for i in range(warmup + repeats):
        order = runners[i % len(runners):] + runners[:i % len(runners)]
        for r in order:
            t = r.step()
            if i >= warmup:
                r.times.append(t)
        if i == warmup + repeats - 1 or (i + 1) % 5 == 0:
            log(f'  round {i + 1}/{warmup + repeats}: ' + ' '.join(
                f'{r.name}={statistics.median(r.times or [0.0]) * 1000:.1f}ms' for r in runners))
    out = {r.name: {'median_s': statistics.median(r.times), 'times_s': r.times, 'peak_mb': r.peak_mb()}
           for r in runners}
    base = out.get('origin')
    for res in out.values():
        if base:
            res['time_ratio'] = res['median_s'] / base['median_s']
            if res['peak_mb'] is not None:
                res['memory_ratio'] = res['peak_mb'] / base['peak_mb']
    return out


def block_ops(channels: int = 64, size: int = 16) -> Dict[str, dict]:
    """Aten ops of one train step (on ``meta``, see :func:`model_ops`) of a 3×3 conv + BN (C =
    ``channels``, training-mode BNs, the input requiring a gradient as inside a network) and of the block
    grown from it: every branch type
    (``dyrep``), DBB's and RepVGG's sets, each per branch and ``+fast``."""
    out = {}
    x = torch.randn(2, channels, size, size, device='meta', requires_grad=True)
    for mode, branches in (('origin', None), ('dyrep', None), ('dbb', STATIC['dbb']), ('repvgg', STATIC['repvgg'])):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        if mode != 'origin':
            grow(model, ['0'], list(branches) if branches else None)
        model.to('meta').train()
        for fast in ((False, True) if mode != 'origin' else (False, )):
            set_fast_forward(model, fast)
            train_step_ops(model, x)  # the first call packs BN buffers
            ops = train_step_ops(model, x)
            out[mode + ('+fast' if fast else '')] = {'ops': sum(ops.values()), 'kernel_ops': kernel_ops(ops),
                                                     'by_op': dict(ops)}
    base = out['origin']['ops']
    for res in out.values():
        res['ratio'] = res['ops'] / base
    return out


def model_ops(models: Dict[str, nn.Module], size: int = 64) -> Dict[str, int]:
    """Aten ops of one train step (batch 2, ``size``², float32) of each model, on PyTorch's ``meta``
    device (shapes only, no data): the same count on any machine, with the choices the fast forward
    makes on a GPU (on CPU it pools some 1×1–AVG branches first: fewer multiply-adds, more ops)."""
    x = torch.randn(2, 3, size, size, device='meta')
    target = torch.zeros(2, dtype=torch.long, device='meta')
    out = {}
    for name, model in models.items():
        m = copy.deepcopy(model).to(device='meta', dtype=torch.float32).train()
        train_step_ops(m, x, lambda t: F.cross_entropy(m(t), target))  # the first call packs BN buffers
        out[name] = sum(train_step_ops(m, x, lambda t: F.cross_entropy(m(t), target)).values())
    return out


def models_for(arch: str, modes: Sequence[str], device: str, structure: Optional[dict] = None) -> Dict[str, nn.Module]:
    """Every mode, and ``<mode>+fast`` beside every mode but origin (the per-branch forward under the
    plain name)."""
    models = {}
    for mode in modes:
        model = build(arch, mode, structure).to(device)
        if mode == 'origin':
            models[mode] = model
            continue
        set_fast_forward(model, False)
        models[mode] = model
        fast = copy.deepcopy(model)
        set_fast_forward(fast, True)
        models[f'{mode}+fast'] = fast
    return models


def run(archs: Sequence[str] = ARCHS, modes: Sequence[str] = MODES, batches: Sequence[int] = (64, 256),
        precisions: Sequence[str] = ('fp32', 'bf16'), size: int = 224, device: str = 'cuda', warmup: int = 5,
        repeats: int = 20, structures: Optional[Dict[str, dict]] = None,
        log: Callable[[str], None] = print) -> dict:
    """The whole benchmark: per arch, per precision and batch, the timing table; ops per model and
    per block. ``structures``: per arch, the evolved structure ``dyrep`` replays instead of the fixed
    one. JSON-able."""
    result = {'machine': machine(device), 'size': size, 'archs': {}, 'block_ops': block_ops()}
    for arch in archs:
        models = models_for(arch, modes, device, (structures or {}).get(arch))
        base = num_params(models['origin'])
        entry = {'params': {n: num_params(m) for n, m in models.items()},
                 'params_ratio': {n: num_params(m) / base for n, m in models.items()},
                 'ops': model_ops(models), 'timing': {}}
        for precision in precisions:
            for batch in batches:
                log(f'{arch} {precision} batch {batch}:')
                try:
                    entry['timing'][f'{precision}/{batch}'] = time_modes(models, batch, size, precision, device,
                                                                         warmup, repeats, log)
                except torch.cuda.OutOfMemoryError as e:  # batch 256 of DBB may not fit a small GPU
                    entry['timing'][f'{precision}/{batch}'] = {'error': f'out of memory: {e}'.splitlines()[0]}
                    torch.cuda.empty_cache()
        result['archs'][arch] = entry
    return result


def table(result: dict) -> List[str]:
    """The result as lines of text: per arch and setting, step ms, x origin and peak MB per mode."""
    lines = []
    for arch, entry in result['archs'].items():
        for setting, modes in entry['timing'].items():
            if 'error' in modes:
                lines.append(f'{arch:9} {setting:9} {modes["error"]}')
                continue
            for mode, r in modes.items():
                peak = '' if r['peak_mb'] is None else f'{r["peak_mb"]:8.0f} MB {r.get("memory_ratio", 1):5.2f}x'
                lines.append(f'{arch:9} {setting:9} {mode:12} {r["median_s"] * 1000:8.1f} ms '
                             f'{r.get("time_ratio", 1):5.2f}x {peak}  ops {entry["ops"][mode]}')
    for mode, r in result['block_ops'].items():
        lines.append(f'3x3 block (C=64) {mode:12} {r["ops"]:3d} ops ({r["kernel_ops"]} may launch a kernel) '
                     f'{r["ratio"]:.2f}x conv + BN')
    return lines


__all__ = ['ARCHS', 'MODES', 'TABLE3_CONVS', 'block_ops', 'build', 'model_ops', 'models_for', 'run', 'table',
           'time_modes']
