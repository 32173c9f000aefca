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
(``+fast``: ``fast_forward``, the default); ``per_branch=False`` leaves the reference out. A train step
is forward + cross-entropy + backward + SGD (momentum 0.9) on a fixed random batch, in float32 or under
bf16 autocast. Steps are interleaved round-robin across modes; medians after warm-up; CUDA-synchronised;
peak memory per mode from ``torch.cuda.max_memory_allocated`` over one step (on CPU: not measured); on
CUDA also the host's share of a step (``host_fraction``: the time the host took to issue the step's
kernels over the step's; near 1, the GPU waited for the host). The aten ops, bytes moved and bytes saved
for the backward of one train step (:mod:`mmdyrep.analysis.ops`: proxies for launches, memory traffic
and activation memory) are counted on PyTorch's ``meta`` device (shapes only: the same on any machine,
with a GPU's choices) for the whole model at the smallest batch and for one 3×3 block (C = 64) against
the conv + BN it replaced.

Two ways to run the same models faster, measured beside the eager ones:

* ``channels_last=True``: models and input in ``torch.channels_last`` memory format (NHWC, the
  layout of cuDNN's tensor-core convolutions) for the whole run (on CPU with oneDNN off:
  :func:`onednn_guard`);
* ``compile_backend='inductor'``: ``origin`` and every ``+fast`` model also as
  ``torch.compile(model)`` (``<name>+compile``; the optimizer step stays eager, the same for all). A
  compiled model's first step (compiling forward and backward) runs alone before the timed rounds and
  is reported as ``first_step_s``; its times are also given relative to ``origin+compile``, and its
  first loss relative to the eager model's (same weights, same batch: a check of the compiled
  forward). Each new input shape or precision compiles again: give one batch and one precision.
"""
import contextlib
import copy
import statistics
import warnings
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mmdyrep.core import grow, growable_convs
from mmdyrep.core.block import set_fast_forward
from mmdyrep.core.structure import apply_structure
from . import roofline
from .one_conv import OneConvBlock
from .ops import kernel_ops, train_step_counts
from .timing import issued, machine, num_params

ARCHS = ('resnet18', 'resnet50')
#: the convs grown with every branch type in the fixed ``dyrep`` structure
TABLE3_CONVS = {
    'resnet18': ('layer2.0.conv2', 'layer3.0.conv2', 'layer4.0.conv2'),
    'resnet50': ('layer1.0.conv2', 'layer2.0.conv2', 'layer3.0.conv2', 'layer4.0.conv2'),
}
STATIC = {'repvgg': ('1x1', 'residual'), 'dbb': ('1x1_kxk', '1x1_avg', '1x1')}
MODES = ('origin', 'repvgg', 'dbb', 'dyrep')
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16}
#: the suffix of a ``torch.compile``'d model's name
COMPILED = '+compile'


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
        self.host_times: List[float] = []  # the host's share of each timed step (:func:`~.timing.issued`)
        self.first_loss: Optional[torch.Tensor] = None  # the loss of the initial weights
        self.first_step_s: Optional[float] = None

    def _train_step(self) -> None:
        device = self.x.device.type
        with torch.autocast(device, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            loss = F.cross_entropy(self.model(self.x), self.y)
        if self.first_loss is None:
            self.first_loss = loss.detach()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> Tuple[float, float]:
        """One train step's seconds (synchronised) and the seconds the host took to issue it
        (:func:`~.timing.issued`)."""
        seconds, host, _ = issued(self._train_step, self.x.device)
        return seconds, host

    def peak_mb(self) -> Optional[float]:
        if self.x.device.type != 'cuda':
            return None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self._train_step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20


def onednn_guard(device: str, channels_last: bool) -> ContextManager:
    """A context in which a channels-last train step is safe on ``device``: on CPU, oneDNN turned off.
    oneDNN's 1×1 stride-2 conv weight gradient in NHWC with fewer input channels than its block (the
    stem's 1×1 branch of RepVGG / DBB: 3) writes past its buffer (uxlfoundation/oneDNN#6035): a crash
    (seen with torch 2.14 on an AVX2 CPU) or wrong gradients. GPUs (cuDNN) are not concerned: a no-op there."""
    if not channels_last or torch.device(device).type != 'cpu':
        return contextlib.nullcontext()
    return onednn_off()


def onednn_off() -> ContextManager:
    """A context in which CPU convolutions do not use oneDNN (PyTorch's own kernels run instead)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter('ignore')  # torch warns about oneDNN TF32 on Intel GPUs when flags are set
    stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
    return stack


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def time_modes(models: Dict[str, nn.Module], batch: int, size: int, precision: str, device: str, warmup: int,
               repeats: int, log: Callable[[str], None] = print, channels_last: bool = False) -> Dict[str, dict]:
    """Median train-step time and peak memory of each model (interleaved rounds), with ratios to
    ``origin``; for a compiled model (name ending in :data:`COMPILED`) also the time of its first step
    (the compile, before the rounds), its ratios to ``origin+compile`` and its first loss against the
    eager model's. A compiled model whose first step raises (no C compiler for Triton, an op the
    backend lacks) gets ``{'error': ...}`` and leaves the rounds. ``channels_last``: the input in that
    memory format (the models are as given)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch, ), generator=g).to(device)
    runners = [_Runner(name, m, x, y, PRECISIONS[precision]) for name, m in models.items()]
    for m in models.values():
        m.train()
    failed: Dict[str, dict] = {}
    with onednn_guard(device, channels_last):
        for r in runners:  # compile one model at a time, outside the timed rounds
            if not r.name.endswith(COMPILED):
                continue
            try:
                r.first_step_s = r.step()[0]
            except Exception as e:  # the eager models and the other compiled ones still count
                failed[r.name] = {'error': ' '.join(f'{type(e).__name__}: {e}'.split())[:300]}
                log(f'  {r.name}: compiling failed: {failed[r.name]["error"]}')
                r.optimizer.zero_grad(set_to_none=True)
                continue
            log(f'  {r.name}: first step (compiles) {r.first_step_s:.1f} s')
        runners = [r for r in runners if r.name not in failed]
        for i in range(warmup + repeats):
            order = runners[i % len(runners):] + runners[:i % len(runners)]
            for r in order:
                t, host = r.step()
                if i >= warmup:
                    r.times.append(t)
                    r.host_times.append(host)
            if i == warmup + repeats - 1 or (i + 1) % 5 == 0:
                log(f'  round {i + 1}/{warmup + repeats}: ' + ' '.join(
                    f'{r.name}={statistics.median(r.times or [0.0]) * 1000:.1f}ms' for r in runners))
        out = {r.name: {'median_s': statistics.median(r.times), 'times_s': r.times, 'peak_mb': r.peak_mb(),
                        'first_loss': r.first_loss.item()} for r in runners}
        if torch.device(device).type == 'cuda':  # on CPU the host's time is the step's
            for r in runners:
                host = statistics.median(r.host_times)
                out[r.name].update(host_median_s=host, host_fraction=host / out[r.name]['median_s'])
    for r in runners:
        if r.first_step_s is not None:
            out[r.name]['first_step_s'] = r.first_step_s
    for name, res in out.items():
        for suffix, base in (('', out.get('origin')), ('_compiled', out.get('origin' + COMPILED))):
            if base is None or (suffix and not name.endswith(COMPILED)):
                continue
            res['time_ratio' + suffix] = res['median_s'] / base['median_s']
            if res['peak_mb'] is not None:
                res['memory_ratio' + suffix] = res['peak_mb'] / base['peak_mb']
        eager = out.get(name[:-len(COMPILED)]) if name.endswith(COMPILED) else None
        if eager is not None:
            res['loss_vs_eager'] = _relative(res['first_loss'], eager['first_loss'])
    return {**out, **failed}


def conv_bn(channels: int, mode: str = 'origin', seed: int = 0) -> nn.Module:
    """``nn.Sequential(conv 3×3, BN)`` with ``channels`` in and out, from the weights of ``seed``; its conv
    grown with every branch type (``dyrep``) or a static set (``repvgg``, ``dbb``), or plain (``origin``)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
    if mode in STATIC:
        grow(model, ['0'], list(STATIC[mode]))
    elif mode == 'dyrep':
        grow(model, ['0'])
    elif mode != 'origin':
        raise ValueError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
    return model


#: the blocks :func:`grown_block` builds: ``<mode>`` per branch, ``<mode>+fast`` (the fast forward) and
#: ``dyrep+one-conv`` (issue 12's suggested merge, :mod:`.one_conv`), in the order :func:`block_ops` counts them
BLOCK_VARIANTS = ('origin', 'dyrep', 'dyrep+fast', 'dbb', 'dbb+fast', 'repvgg', 'repvgg+fast', 'dyrep+one-conv')


def grown_block(name: str, channels: int, seed: int = 0) -> nn.Module:
    """:func:`conv_bn` in training mode, grown and run as ``name`` (one of :data:`BLOCK_VARIANTS`) says."""
    if name not in BLOCK_VARIANTS:
        raise ValueError(f"unknown block '{name}' (choose from {', '.join(BLOCK_VARIANTS)})")
    mode, _, how = name.partition('+')
    model = conv_bn(channels, mode, seed)
    if mode != 'origin':
        set_fast_forward(model, how == 'fast')
    if how == 'one-conv':
        model[0] = OneConvBlock(model[0])
    return model.train()


def _pack_buffers(model: nn.Module, x: torch.Tensor) -> None:
    """One training forward of ``model``, not counted: the first packs the running statistics of its grouped
    BNs (:func:`~mmdyrep.core.grouped_block.pack_buffers`), which a counted step must not include."""
    model(x)


def block_ops(channels: int = 64, size: int = 56, batch: int = 64) -> Dict[str, dict]:
    """Aten ops, bytes moved and bytes saved for the backward (:func:`~.ops.count`) by one train step, on
    ``meta`` (see :func:`model_counts`), of a 3×3 conv + BN (C = ``channels``, ``batch`` × ``size``²,
    float32, training-mode BNs, the input requiring a gradient as inside a network) and of the block
    grown from it: every branch type (``dyrep``), DBB's and RepVGG's sets, each per branch and ``+fast``.
    ``kernels`` adds to the ops that may launch one the kernels convolutions launch inside themselves on
    CUDA (``hidden``, by kind), and ``bytes`` their bytes. ``ratio`` (ops), ``kernel_ratio``, ``traffic``
    (bytes), ``macs_ratio`` (multiply-adds) and ``memory`` (saved) are over the conv + BN's. Also counted:
    issue 12's suggested merge (``dyrep+one-conv``, :mod:`.one_conv`)."""
    out = {}
    x = torch.randn(batch, channels, size, size, device='meta', requires_grad=True)
    for name in BLOCK_VARIANTS:
        model = grown_block(name, channels).to('meta')
        _pack_buffers(model, x)
        c = train_step_counts(model, x)
        cost = roofline.costs(c)
        out[name] = {'ops': sum(c.ops.values()), 'kernel_ops': kernel_ops(c.ops), 'by_op': dict(c.ops),
                     'hidden': dict(c.hidden), 'kernels': cost.kernels, 'bytes': cost.bytes, 'macs': cost.macs,
                     'saved': c.saved}
    base = out['origin']
    for res in out.values():
        res['ratio'], res['traffic'] = res['ops'] / base['ops'], res['bytes'] / base['bytes']
        res['kernel_ratio'], res['memory'] = res['kernels'] / base['kernels'], res['saved'] / base['saved']
        res['macs_ratio'] = res['macs'] / base['macs']
    return out


def model_counts(models: Dict[str, nn.Module], batch: int = 64, size: int = 224,
                 dtype: torch.dtype = torch.float32) -> Dict[str, dict]:
    """``{'ops': {name: aten ops}, 'kernels': {name: those that may launch a kernel, and the kernels the
    convolutions launch inside themselves on CUDA}, 'traffic': {name: bytes moved (those kernels' too) /
    origin's}, 'memory': {name: bytes saved for the backward / origin's}, 'costs': {name:
    :class:`~.roofline.Costs`}}`` of one train step (``batch`` × ``size``², ``dtype``) of each model
    (:func:`~.ops.count`), on PyTorch's ``meta`` device: shapes only, no data, so any shape costs the
    same; the same count on any machine, with the choices the fast forward makes on a GPU (on CPU it pools
    some 1×1–AVG branches first: fewer multiply-adds, more ops). (bf16 here is the model in bf16: the bytes
    of autocast's activations, without its casts of the weights.)"""
    x = torch.randn(batch, 3, size, size, device='meta', dtype=dtype)
    target = torch.zeros(batch, dtype=torch.long, device='meta')
    ops, saved, costs = {}, {}, {}
    for name, model in models.items():
        # in the default memory format: a BN on ``meta`` returns NCHW whatever its input, so channels-last
        # models would count layout copies that a GPU does not make
        m = copy.deepcopy(model).to(device='meta', dtype=dtype, memory_format=torch.contiguous_format)
        m.train()
        _pack_buffers(m, x)
        counts = train_step_counts(m, x, lambda t: F.cross_entropy(m(t).float(), target))
        ops[name], saved[name], costs[name] = sum(counts.ops.values()), counts.saved, roofline.costs(counts)
    kernels = {name: int(c.kernels) for name, c in costs.items()}
    if 'origin' not in models:
        return {'ops': ops, 'kernels': kernels, 'traffic': {}, 'memory': {}, 'costs': costs}
    return {'ops': ops, 'kernels': kernels, 'costs': costs,
            'traffic': {name: c.bytes / costs['origin'].bytes for name, c in costs.items()},
            'memory': {name: b / saved['origin'] for name, b in saved.items()}}


def with_compiled(models: Dict[str, nn.Module], backend: str = 'inductor') -> Dict[str, nn.Module]:
    """``models`` and, after them, ``<name>+compile``: ``torch.compile(copy, backend=backend)`` of
    ``origin`` and of every ``+fast`` model (own weights and optimizer; the per-branch reference forwards
    are not compiled). Compiling happens at the first call."""
    compiled = {f'{name}{COMPILED}': torch.compile(copy.deepcopy(model), backend=backend)
                for name, model in models.items() if name == 'origin' or name.endswith('+fast')}
    return {**models, **compiled}


def models_for(arch: str, modes: Sequence[str], device: str, structure: Optional[dict] = None,
               per_branch: bool = True, channels_last: bool = False) -> Dict[str, nn.Module]:
    """Every mode as ``<mode>+fast`` (but origin), and beside it, under the plain name, the same model
    with the per-branch reference forward (not with ``per_branch=False``). ``channels_last``: the
    models' 4-D parameters in that memory format."""
    models = {}
    for mode in modes:
        model = build(arch, mode, structure).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if mode == 'origin':
            models[mode] = model
            continue
        if per_branch:
            set_fast_forward(model, False)
            models[mode] = model
            model = copy.deepcopy(model)
        set_fast_forward(model, True)
        models[f'{mode}+fast'] = model
    return models


def run(archs: Sequence[str] = ARCHS, modes: Sequence[str] = MODES, batches: Sequence[int] = (64, 256),
        precisions: Sequence[str] = ('fp32', 'bf16'), size: int = 224, device: str = 'cuda', warmup: int = 5,
        repeats: int = 20, structures: Optional[Dict[str, dict]] = None,
        log: Callable[[str], None] = print, per_branch: bool = True, channels_last: bool = False,
        compile_backend: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None) -> dict:
    """The whole benchmark: per arch, per precision and batch, the timing table; ops per model and
    per block. ``structures``: per arch, the evolved structure ``dyrep`` replays instead of the fixed
    one; ``per_branch``, ``channels_last``: see :func:`models_for`; ``compile_backend``: also the
    compiled models (:func:`with_compiled`, e.g. ``'inductor'``). ``progress(result)`` is called with the
    result so far after each setting (to save what a time limit would otherwise lose). JSON-able."""
    result = {'machine': machine(device), 'size': size, 'per_branch': per_branch, 'channels_last': channels_last,
              'compile_backend': compile_backend, 'archs': {}, 'block_ops': block_ops()}
    for arch in archs:
        models = models_for(arch, modes, device, (structures or {}).get(arch), per_branch, channels_last)
        counts = model_counts(models, min(batches), size)
        if compile_backend:
            models = with_compiled(models, compile_backend)
        base = num_params(models['origin'])
        entry = {'params': {n: num_params(m) for n, m in models.items()},
                 'params_ratio': {n: num_params(m) / base for n, m in models.items()}, **counts, 'timing': {}}
        result['archs'][arch] = entry
        for precision in precisions:
            for batch in batches:
                log(f'{arch} {precision} batch {batch}{" channels_last" if channels_last else ""}:')
                try:
                    entry['timing'][f'{precision}/{batch}'] = time_modes(models, batch, size, precision, device,
                                                                         warmup, repeats, log, channels_last)
                except torch.cuda.OutOfMemoryError as e:  # batch 256 of DBB may not fit a small GPU
                    entry['timing'][f'{precision}/{batch}'] = {'error': f'out of memory: {e}'.splitlines()[0]}
                    torch.cuda.empty_cache()
                if progress is not None:
                    progress(result)
    return result


def table(result: dict) -> List[str]:
    """The result as lines of text: per arch and setting, step ms, x origin and peak MB per mode; per arch,
    the ops and bytes of one step (:func:`model_counts`); then the same per block (:func:`block_ops`)."""
    lines = []
    for arch, entry in result['archs'].items():
        for setting, modes in entry['timing'].items():
            if 'error' in modes:
                lines.append(f'{arch:9} {setting:9} {modes["error"]}')
                continue
            for mode, r in modes.items():
                if 'error' in r:
                    lines.append(f'{arch:9} {setting:9} {mode:20} {r["error"]}')
                    continue
                peak = '' if r['peak_mb'] is None else f'{r["peak_mb"]:8.0f} MB {r.get("memory_ratio", 1):5.2f}x'
                line = (f'{arch:9} {setting:9} {mode:20} {r["median_s"] * 1000:8.1f} ms '
                        f'{r.get("time_ratio", 1):5.2f}x {peak}')
                if 'host_fraction' in r:
                    line += f'  host {r["host_fraction"]:4.0%}'
                if 'first_step_s' in r:
                    line += (f'  {r.get("time_ratio_compiled", float("nan")):5.2f}x origin{COMPILED}, first step '
                             f'{r["first_step_s"]:.1f} s, first loss vs eager {r.get("loss_vs_eager", 0):.1e}')
                lines.append(line)
    for arch, entry in result['archs'].items():
        for mode, n in entry['ops'].items():
            lines.append(f'{arch:9} one train step: {mode:20} {n:5d} aten ops, '
                         f'{entry.get("kernels", {}).get(mode, 0):5d} CUDA kernels; x origin: bytes moved '
                         f'{entry["traffic"].get(mode, float("nan")):5.2f}, bytes saved for the backward '
                         f'{entry.get("memory", {}).get(mode, float("nan")):5.2f}')
    for mode, r in result['block_ops'].items():
        lines.append(f'3x3 block (C=64) {mode:14} {r["ops"]:3d} ops {r["ratio"]:.2f}x conv + BN; '
                     f'{r["kernels"]:3d} CUDA kernels {r["kernel_ratio"]:.2f}x; bytes moved {r["traffic"]:.2f}x, '
                     f'saved {r["memory"]:.2f}x, multiply-adds {r.get("macs_ratio", float("nan")):.2f}x')
    return lines


__all__ = ['ARCHS', 'BLOCK_VARIANTS', 'COMPILED', 'MODES', 'TABLE3_CONVS', 'block_ops', 'build', 'conv_bn',
           'grown_block', 'model_counts', 'models_for', 'onednn_guard', 'onednn_off', 'run', 'table', 'time_modes',
           'with_compiled']
