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
* ``host_ms`` (CUDA): the median time the host took to issue the step (:func:`~.timing.issued`);

for the per-branch forward, the fast forward (grouped BNs on a GPU) and, with ``compile_backend``, the
fast forward under ``torch.compile`` (``+compile``: the compile happens in the warm-up and is timed
alone as ``compile_s``).

:func:`host_times` measures what issuing a step costs the host, on CPU: each variant's step on inputs so
small (:data:`HOST_INPUT`) that its kernels cost next to nothing, one thread, oneDNN off, and the BNs
grouped as on a GPU. A GPU whose kernels are short waits for its host, so this is the proxy for that
regime, as the kernel count is for launches. Pure PyTorch.
"""
import contextlib
import statistics
import time
from collections import defaultdict
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from mmdyrep.core import fast_block
from .benchmark import PRECISIONS, grown_block, onednn_off
from .ops import count_ops
from .timing import issued, timed

#: the variants, in the order they run (the compiled ones last: the slowest to prepare); ``dyrep+one-conv`` is
#: issue 12's suggested merge (:mod:`.one_conv`), there to be timed
VARIANTS = ('conv+bn', 'dyrep', 'dyrep+fast', 'dbb', 'dbb+fast', 'repvgg', 'repvgg+fast', 'dyrep+one-conv',
            'dyrep+fast+compile', 'dbb+fast+compile')


def build_block(variant: str, channels: int, seed: int = 0) -> nn.Module:
    """:func:`~.benchmark.grown_block` as ``variant`` says (see :data:`VARIANTS`; ``conv+bn``: the plain
    one; ``+compile``: the block to compile), in training mode."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}' (choose from {', '.join(VARIANTS)})")
    return grown_block('origin' if variant == 'conv+bn' else variant.removesuffix('+compile'), channels, seed)


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
            times = [issued(step, device)[:2] for _ in range(repeats)]
            entry['ms'] = 1e3 * statistics.median(t for t, _ in times)
            if cuda:
                entry['host_ms'] = 1e3 * statistics.median(h for _, h in times)
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
        if 'host_ms' in res:
            line += f'   host {res["host_ms"]:6.2f} ms'
        if 'compile_s' in res:
            line += f'   (compile {res["compile_s"]:.1f} s)'
        lines.append(line)
        if res.get('top_kernels'):
            lines.append('      longest: ' + '; '.join(f'{name[:48]} {us:.0f} us x{calls}'
                                                      for name, us, calls in res['top_kernels'][:3]))
    return lines


#: the input :func:`host_times` steps on: one sample, 4 channels, 16×16, the fewest output positions at which
#: the fast forward plans as for a full-sized input (``fast_block.MIN_POSITIONS``)
HOST_INPUT = (1, 4, 16, 16)
HOST_VARIANTS = tuple(v for v in VARIANTS if not v.endswith('+compile'))


@contextlib.contextmanager
def host_settings() -> Iterator[None]:
    """CPU settings under which a step on tiny inputs takes about what issuing it takes a GPU's host: one
    thread, oneDNN off (it builds a primitive per convolution call: about 150 µs each on this project's CPU,
    where the default convolution takes 25) and the BNs grouped as on a GPU (``fast_block.GROUP_BNS``).
    Everything is restored after."""
    threads, grouped = torch.get_num_threads(), dict(fast_block.GROUP_BNS)
    torch.set_num_threads(1)
    fast_block.GROUP_BNS['cpu'] = fast_block.GROUP_BNS.get('cuda', True)
    try:
        with onednn_off():
            yield
    finally:
        fast_block.GROUP_BNS.clear()
        fast_block.GROUP_BNS.update(grouped)
        torch.set_num_threads(threads)


def host_times(variants: Sequence[str] = HOST_VARIANTS, rounds: int = 25, steps: int = 12,
               warmup: int = 5) -> Dict[str, dict]:
    """Per variant, the median microseconds of one train step (forward, sum, backward, gradients cleared) of
    the block on a :data:`HOST_INPUT` input requiring a gradient, under :func:`host_settings`: ``rounds``
    rounds that time ``steps`` steps of every variant in turn (after ``warmup`` untimed ones), the same
    weights for all; ``ratio`` to ``conv+bn``'s and, for a ``+fast`` or ``+one-conv`` variant, ``vs_per_branch``."""
    unknown = [v for v in variants if v not in HOST_VARIANTS]
    if unknown:
        raise ValueError(f"host_times: unknown variant(s) {', '.join(unknown)} (choose from "
                         f"{', '.join(HOST_VARIANTS)})")
    with host_settings():
        x = torch.randn(*HOST_INPUT, requires_grad=True)
        models = {v: build_block(v, HOST_INPUT[1]) for v in variants}

        def step(model: nn.Module) -> None:
            model(x).sum().backward()
            x.grad = None
            for p in model.parameters():
                p.grad = None

        times: Dict[str, List[float]] = {v: [] for v in variants}
        for _ in range(rounds):
            for v, model in models.items():
                for _ in range(warmup):
                    step(model)
                t0 = time.perf_counter()
                for _ in range(steps):
                    step(model)
                times[v].append((time.perf_counter() - t0) / steps * 1e6)
    out = {v: {'us': statistics.median(t)} for v, t in times.items()}
    for v, res in out.items():
        if 'conv+bn' in out:
            res['ratio'] = res['us'] / out['conv+bn']['us']
        reference = out.get(v.split('+')[0])
        if '+' in v and reference:
            res['vs_per_branch'] = res['us'] / reference['us']
    return out


__all__ = ['HOST_INPUT', 'HOST_VARIANTS', 'VARIANTS', 'block_kernels', 'build_block', 'device_kernels',
           'host_settings', 'host_times', 'table']
