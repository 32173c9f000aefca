"""What every benchmark needs to time a step and say where it ran, pure PyTorch (no OpenMMLab import).

:func:`sync` waits for the device before a clock is read, :func:`timed` times one call between two
syncs, :func:`issued` also the time the host took to issue it (on a GPU: whether a step is bound by the
host's Python and dispatch rather than by the device), :func:`machine` describes the machine for the
JSON the benchmarks write, :func:`num_params` counts a module's parameters. Used by :mod:`.benchmark`
(torchvision), :mod:`.training_cost` and :mod:`.overheads` (OpenMMLab models).
"""
import os
import platform
import time
from typing import Any, Callable, Optional, Tuple, Union

import torch
from torch import nn


def sync(device: Union[str, torch.device]) -> None:
    """Wait for the queued kernels of a CUDA ``device`` (``'cuda'``, ``'cuda:1'``, a ``torch.device``)."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: Union[str, torch.device]) -> Tuple[float, Any]:
    """``(seconds, fn())``, the device synchronised before and after the call."""
    seconds, _, out = issued(fn, device)
    return seconds, out


def issued(fn: Callable[[], Any], device: Union[str, torch.device]) -> Tuple[float, float, Any]:
    """``(seconds, host seconds, fn())``: the call timed between two syncs as :func:`timed` does, and the time
    until ``fn`` returned, before the second sync. On a CUDA device the host only queues kernels, so the
    host seconds are what issuing them cost (the Python, the dispatcher, the launches), and a step whose
    host seconds are close to its seconds kept the GPU waiting for the host; on a CPU the two are equal."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    t1 = time.perf_counter()
    sync(device)
    return time.perf_counter() - t0, t1 - t0, out


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``; where there is none, what ``platform`` says."""
    try:
        with open('/proc/cpuinfo') as f:
            name = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), '')
    except OSError:
        name = ''
    return name or platform.processor() or platform.machine()


def machine(device: Optional[str] = None) -> dict:
    """The machine a benchmark ran on: CPU (model name, ``nproc``, torch threads), torch and Python
    versions; with ``device``, that device; the GPU's name where CUDA is available (of ``device`` if it
    is a CUDA device) and, for a CUDA ``device``, whether TF32 is allowed."""
    info = {'nproc': os.cpu_count(), 'cpu': _cpu_name(), 'torch': torch.__version__,
            'threads': torch.get_num_threads(), 'python': platform.python_version()}
    gpu = device is not None and torch.device(device).type == 'cuda'
    if device is not None:
        info['device'] = device
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(device if gpu else None)
    if gpu:
        info['tf32'] = {'cudnn': torch.backends.cudnn.allow_tf32, 'matmul': torch.backends.cuda.matmul.allow_tf32}
    return info


__all__ = ['issued', 'machine', 'num_params', 'sync', 'timed']
