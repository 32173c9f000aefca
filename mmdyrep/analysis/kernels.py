"""Kernels one train step of a single DyRep block launches on a GPU: issue 12's launch proxy, measured.

:func:`mmdyrep.analysis.benchmark.block_ops` counts the aten ops a step dispatches, the same on any
machine; what a GPU runs is fewer (allocations launch nothing) or more (an op may launch several
kernels), and ``torch.compile`` fuses ops into generated kernels that no dispatch count sees. Here one
3×3 conv + BN (``C`` channels, ``N × C × H × W`` input requiring a gradient, as inside a network,
training-mode BNs) and the blocks grown from it (every branch type: ``dyrep``; DBB's set: ``dbb``) run
forward + sum + backward; :func:`block_kernels` reports per variant

* ``kernels``: on a CUDA device, the device-side events ``torch.profiler`` records for one step
  (kernels, memsets, memcpys); elsewhere the aten ops of :func:`~.ops.count_ops` (then named
  ``aten_ops``; of a compiled variant, the ops its compiled code dispatches, which says nothing of the
  kernels a GPU backend would fuse);
* ``top_kernels`` (CUDA): the kernels the step's device time goes to, ``[name, µs, calls]``, longest first;
* ``ms``: the median step time after warm-up, synchronised;

for the per-branch forward, the fast forward (grouped BNs on a GPU) and, with ``compile_backend``, the
fast forward under ``torch.compile`` (``+compile``: the compile happens in the warm-up and is timed
alone as ``compile_s``). Pure PyTorch.
"""
import statistics
from collections import defaultdict
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from mmdyrep.core.block import set_fast_forward
from .benchmark import PRECISIONS, conv_bn
from .ops import count_ops
from .timing import timed

#: the variants, in the order they run (the compiled ones last: the slowest to prepare)
VARIANTS = ('conv+bn', 'dyrep', 'dyrep+fast', 'dbb', 'dbb+fast', 'dyrep+fast+compile', 'dbb+fast+compile')


def build_block(variant: str, channels: int, seed: int = 0) -> nn.Module:
    """:func:`~.benchmark.conv_bn` grown as ``variant`` says (see :data:`VARIANTS`), with the fast or the
    per-branch forward, in training mode."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}' (choose from {', '.join(VARIANTS)})")
    kind = variant.split('+')[0]
    model = conv_bn(channels, 'origin' if kind == 'conv' else kind, seed)
    if kind != 'conv':
        set_fast_forward(model, '+fast' in variant)
    return model.train()


def device_kernels(step: Callable[[], None], device_type: str = 'cuda',
                   top: int = 12) -> Tuple[int, List[Tuple[str, float, int]]]:
    """The device-side events (kernels, memsets, memcpys) ``torch.profiler`` records for one ``step()``
    on CUDA, and the ``top`` of them by total time: ``[(name, microseconds, calls)]``, longest first.
    (``device_type='cpu'``: the CPU's events, the aten ops, for tests.)"""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    cuda = device_type == 'cuda'
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    kind = DeviceType.CUDA if cuda else DeviceType.CPU
    events = [e for e in prof.events() if e.device_type == kind]
    times, calls = defaultdict(float), defaultdict(int)
    for e in events:
        times[e.name] += e.time_range.elapsed_us()
        calls[e.name] += 1
    ranked = sorted(times, key=times.get, reverse=True)[:top]
    return len(events), [(name, times[name], calls[name]) for name in ranked]


def block_kernels(device: str = 'cuda', channels: int = 64, size: int = 56, batch: int = 64, precision: str = 'bf16',
                  compile_backend: Optional[str] = 'inductor', warmup: int = 3, repeats: int = 10,
                  variants=VARIANTS, progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Per variant: kernels (or aten ops) of one train step, their ratio to ``conv+bn``'s, median step
    time; compiled variants only with ``compile_backend``. A variant that raises (e.g. no C compiler
    for Triton) gets ``{'error': ...}`` and the others still run. ``progress(result)`` after each."""
    cuda = torch.device(device).type == 'cuda'
    unit = 'kernels' if cuda else 'aten_ops'
    amp = PRECISIONS[precision]
    result = {'device': device, 'channels': channels, 'input': [batch, channels, size, size],
              'precision': precision, 'unit': unit, 'compile_backend': compile_backend, 'variants': {}}
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    for variant in variants:
        compiled = variant.endswith('+compile')
        if compiled and not compile_backend:
            continue
        try:
            model = build_block(variant, channels).to(device)
            forward = torch.compile(model, backend=compile_backend) if compiled else model

            def step():
                with torch.autocast(torch.device(device).type, dtype=amp or torch.float32, enabled=amp is not None):
                    out = forward(x)
                out.float().sum().backward()
                x.grad = None
                for p in model.parameters():
                    p.grad = None

            entry = {}
            first_s, _ = timed(step, device)  # the first step packs BN buffers and, compiled, compiles
            if compiled:
                entry['compile_s'] = first_s
            for _ in range(max(warmup - 1, 0)):
                step()
            try:
                if cuda:  # which kernels the time goes to, longest first
                    entry[unit], entry['top_kernels'] = device_kernels(step)
                else:
                    entry[unit] = sum(count_ops(step).values())
            except Exception as e:  # keep the timing
                entry[f'{unit}_error'] = f'{type(e).__name__}: {e}'.splitlines()[0][:300]
            entry['ms'] = 1e3 * statistics.median(timed(step, device)[0] for _ in range(repeats))
        except Exception as e:  # the other variants still count
            entry = {'error': f'{type(e).__name__}: {e}'.splitlines()[0][:300]}
        result['variants'][variant] = entry
        base = result['variants'].get('conv+bn', {})
        for res in result['variants'].values():
            if unit in res and base.get(unit):
                res['ratio'] = res[unit] / base[unit]
            if 'ms' in res and base.get('ms'):
                res['time_ratio'] = res['ms'] / base['ms']
        if progress is not None:
            progress(result)
    return result


def table(result: dict) -> list:
    """One printable line per variant."""
    unit = result['unit']
    lines = [f"3x3 block, input {'x'.join(map(str, result['input']))}, {result['precision']}, {result['device']}: "
             f'{unit} per train step (forward + backward)']
    for name, res in result['variants'].items():
        if 'error' in res:
            lines.append(f'  {name:20s} error: {res["error"]}')
            continue
        count = f'{res[unit]:5d} {unit} {res.get("ratio", float("nan")):5.2f}x' if unit in res else \
            f'{unit}: {res.get(unit + "_error")}'
        line = f'  {name:20s} {count}   {res["ms"]:8.2f} ms {res.get("time_ratio", float("nan")):5.2f}x'
        if 'compile_s' in res:
            line += f'   (compile {res["compile_s"]:.1f} s)'
        lines.append(line)
        if res.get('top_kernels'):
            lines.append('      longest: ' + '; '.join(f'{name[:48]} {us:.0f} us x{calls}'
                                                      for name, us, calls in res['top_kernels'][:3]))
    return lines


__all__ = ['VARIANTS', 'block_kernels', 'build_block', 'device_kernels', 'table']
