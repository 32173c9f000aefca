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
"""
import math
from typing import Dict, Iterable, NamedTuple, Sequence, Tuple

from .ops import Counts, kernel_ops


class Costs(NamedTuple):
    """What a step costs a GPU, by the counts: bytes moved, multiply-adds, kernels."""
    bytes: float
    macs: float
    kernels: float


def costs(counts: Counts) -> Costs:
    """The :class:`Costs` of :func:`~.ops.count`'s result (the hidden kernels and their bytes included)."""
    return Costs(sum(counts.bytes.values()) + sum(counts.hidden_bytes.values()), sum(counts.macs.values()),
                 kernel_ops(counts.ops) + sum(counts.hidden.values()))


class Machine(NamedTuple):
    """The model's parameters, relative to a bandwidth of 1 byte per unit of time: ``balance``
    multiply-adds per byte, a launch as long as moving ``launch_bytes`` bytes."""
    balance: float
    launch_bytes: float


def step_time(c: Costs, machine: Machine) -> float:
    """The model's time of a step costing ``c``, in units of moving one byte."""
    return c.bytes + c.macs / machine.balance + c.kernels * machine.launch_bytes


def ratio(c: Costs, base: Costs, machine: Machine) -> float:
    """The model's ``c`` step time over ``base``'s."""
    return step_time(c, machine) / step_time(base, machine)


def _grid(low: float, high: float, n: int) -> Iterable[float]:
    return (low * (high / low)**(i / (n - 1)) for i in range(n))


def fit(observations: Sequence[Tuple[Costs, Costs, float]], balances: Tuple[float, float] = (10.0, 1e5),
        launches: Tuple[float, float] = (1e3, 1e9), n: int = 121) -> Tuple[Machine, float]:
    """The :class:`Machine` whose ratios fit ``observations`` ``(costs, base costs, measured ratio)`` best
    (least squares of log ratios over a log-spaced ``n`` × ``n`` grid of ``balances`` and ``launches``),
    and the root mean square of its log residuals."""
    best = (math.inf, None)
    for balance in _grid(*balances, n):
        for launch in _grid(*launches, n):
            machine = Machine(balance, launch)
            error = sum((math.log(ratio(c, b, machine)) - math.log(measured))**2 for c, b, measured in observations)
            best = min(best, (error, machine), key=lambda e: e[0])
    error, machine = best
    return machine, math.sqrt(error / len(observations))


def fit_by_group(observations: Dict[str, Sequence[Tuple[Costs, Costs, float]]], **grid) -> Dict[str, tuple]:
    """:func:`fit` of each group of observations (e.g. one per precision)."""
    return {group: fit(obs, **grid) for group, obs in observations.items()}


__all__ = ['Costs', 'Machine', 'costs', 'fit', 'fit_by_group', 'ratio', 'step_time']
