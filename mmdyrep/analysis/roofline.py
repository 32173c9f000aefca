"""A GPU step's time from device-independent counts: bytes over bandwidth, multiply-adds over a rate, launches.

One train step runs kernels bound by memory traffic (BNs, additions, concatenations, copies: a few
operations per byte), kernels bound by arithmetic (convolutions), and each costs at least a launch. The
simplest model with all three adds them up:

    t = bytes / bandwidth + multiply_adds / rate + kernels × launch

with ``bytes``, ``multiply_adds`` and ``kernels`` counted on any machine (:func:`~.ops.count` on
``meta``: the dispatched ops that may launch a kernel and the kernels convolutions launch inside
themselves on CUDA). A ratio of two steps does not change when the three parameters scale together, so
measured ratios fix two numbers per precision: the **balance** ``rate / bandwidth`` (multiply-adds per
byte moved in the same time) and the **launch in bytes** ``launch × bandwidth`` (the traffic one launch
costs as much time as). :func:`fit` finds them by least squares on log ratios, over a grid.

It is a model: no overlap between kernels, no cache, one rate for every convolution (cuDNN's efficiency
differs by shape), the traffic of an unfused execution. What it is worth is what its residuals against
measurements say (docs/benchmarks.md).

A second model, ``floor`` (:func:`floor_time`), takes the kernels one by one: each costs the longer of a
launch and its own work,

    t = Σ_k max(launch, bytes_k / bandwidth + multiply_adds_k / rate)

so a launch costs nothing next to a long kernel, and a run of short kernels (a grown block at 7×7, a
BN of a few hundred channels) costs a launch each: the regime where a GPU waits for its host. It needs
every kernel's counts (:attr:`~.ops.Counts.launches`). Same two parameters, same fit.
"""
import math
from typing import Dict, Iterable, List, NamedTuple, Sequence, Tuple

import torch

from .ops import Counts, kernel_ops


class Costs(NamedTuple):
    """What a step costs a GPU, by the counts: bytes moved, multiply-adds, kernels; and, for the ``floor``
    model, each kernel's ``(bytes, multiply-adds)`` (empty where not counted)."""
    bytes: float
    macs: float
    kernels: float
    launches: Tuple[Tuple[int, int], ...] = ()


def costs(counts: Counts) -> Costs:
    """The :class:`Costs` of :func:`~.ops.count`'s result (the hidden kernels and their bytes included)."""
    return Costs(sum(counts.bytes.values()) + sum(counts.hidden_bytes.values()), sum(counts.macs.values()),
                 kernel_ops(counts.ops) + sum(counts.hidden.values()), counts.launches)


class Machine(NamedTuple):
    """The model's parameters, relative to a bandwidth of 1 byte per unit of time: ``balance``
    multiply-adds per byte, a launch as long as moving ``launch_bytes`` bytes."""
    balance: float
    launch_bytes: float


def step_time(c: Costs, machine: Machine) -> float:
    """The model's time of a step costing ``c``, in units of moving one byte."""
    return c.bytes + c.macs / machine.balance + c.kernels * machine.launch_bytes


def _kernels(c: Costs) -> torch.Tensor:
    """``c``'s kernels as a ``[kernels, 2]`` float64 tensor of (bytes, multiply-adds)."""
    if not c.launches:
        raise ValueError('the floor model needs every kernel counted (Costs.launches is empty)')
    return torch.tensor(c.launches, dtype=torch.float64).reshape(-1, 2)


def _floor_times(kernels: torch.Tensor, balance: float, launches: torch.Tensor) -> torch.Tensor:
    """Per launch cost of ``launches``, the ``floor`` model's step time of ``kernels`` (:func:`_kernels`)."""
    work = kernels[:, 0] + kernels[:, 1] / balance
    return torch.maximum(work[None, :], launches[:, None]).sum(1)


def floor_time(c: Costs, machine: Machine) -> float:
    """The ``floor`` model's time of a step costing ``c`` (see the module docstring): every kernel the longer
    of a launch and its own bytes and multiply-adds, in units of moving one byte."""
    launch = torch.tensor([machine.launch_bytes], dtype=torch.float64)
    return _floor_times(_kernels(c), machine.balance, launch).item()


#: the step-time models by name
MODELS = {'sum': step_time, 'floor': floor_time}


def ratio(c: Costs, base: Costs, machine: Machine, model: str = 'sum') -> float:
    """The model's ``c`` step time over ``base``'s."""
    time = MODELS[model]
    return time(c, machine) / time(base, machine)


def _grid(low: float, high: float, n: int) -> Iterable[float]:
    return (low * (high / low)**(i / (n - 1)) for i in range(n))


def fit(observations: Sequence[Tuple[Costs, Costs, float]], balances: Tuple[float, float] = (10.0, 1e5),
        launches: Tuple[float, float] = (1e3, 1e9), n: int = 121, model: str = 'sum') -> Tuple[Machine, float]:
    """The :class:`Machine` whose ratios (by ``model``: ``'sum'`` or ``'floor'``) fit ``observations``
    ``(costs, base costs, measured ratio)`` best (least squares of log ratios over a log-spaced ``n`` × ``n``
    grid of ``balances`` and ``launches``), and the root mean square of its log residuals."""
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}' (choose from {', '.join(MODELS)})")
    best = (math.inf, None)
    if model == 'floor':  # every launch cost of the grid at once
        grid = torch.tensor(list(_grid(*launches, n)), dtype=torch.float64)
        kernels = [(_kernels(c), _kernels(b), math.log(measured)) for c, b, measured in observations]
        for balance in _grid(*balances, n):
            error = sum((torch.log(_floor_times(kc, balance, grid) / _floor_times(kb, balance, grid)) - m)**2
                        for kc, kb, m in kernels)
            i = int(torch.argmin(error))
            best = min(best, (error[i].item(), Machine(balance, grid[i].item())), key=lambda e: e[0])
    else:
        for balance in _grid(*balances, n):
            for launch in _grid(*launches, n):
                machine = Machine(balance, launch)
                error = sum((math.log(ratio(c, b, machine)) - math.log(measured))**2
                            for c, b, measured in observations)
                best = min(best, (error, machine), key=lambda e: e[0])
    error, machine = best
    return machine, math.sqrt(error / len(observations))


#: Issue 12's measurements: one NVIDIA H200, torchvision ResNets grown by ``mmdyrep.core.grow`` (DyRep: the
#: fixed Table-3-sized structure of :data:`~.benchmark.TABLE3_CONVS`), the per-branch forward, one train
#: step (forward, backward, SGD) at ``batch`` × 224² over the plain model's, median of interleaved rounds;
#: fp32 with cuDNN's default TF32, bf16 under autocast. ``{(arch, precision, batch): {mode: ratio}}``.
H200_PER_BRANCH = {
    ('resnet50', 'fp32', 64): {'dyrep': 1.51, 'dbb': 3.10, 'repvgg': 1.30},
    ('resnet50', 'bf16', 64): {'dyrep': 1.58, 'dbb': 3.57, 'repvgg': 1.41},
    ('resnet50', 'bf16', 256): {'dyrep': 1.57, 'dbb': 3.72},
    ('resnet18', 'fp32', 64): {'dyrep': 1.50, 'dbb': 6.15, 'repvgg': 1.79},
    ('resnet18', 'bf16', 64): {'dyrep': 1.60, 'dbb': 7.11, 'repvgg': 2.01},
    ('resnet18', 'bf16', 256): {'dyrep': 1.42, 'dbb': 7.62},
}


def observations(costs: Dict[Tuple[str, str, int], Dict[str, Costs]], measured: Dict = H200_PER_BRANCH,
                 modes: Sequence[str] = ('dyrep', 'dbb', 'repvgg')) -> Dict[str, List[tuple]]:
    """Per precision, ``(costs, origin's costs, measured ratio)`` of each ``measured`` setting and mode of
    ``modes`` that ``costs`` (``{(arch, precision, batch): {mode: Costs}}``) has."""
    out: Dict[str, List[tuple]] = {}
    for (arch, precision, batch), ratios in measured.items():
        counted = costs.get((arch, precision, batch))
        for mode, value in ratios.items():
            if counted is not None and mode in modes and mode in counted:
                out.setdefault(precision, []).append((counted[mode], counted['origin'], value))
    return out


__all__ = ['H200_PER_BRANCH', 'MODELS', 'Costs', 'Machine', 'costs', 'fit', 'floor_time', 'observations', 'ratio',
           'step_time']
