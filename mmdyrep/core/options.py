"""One set of rules for the paper's hyper-parameters, used wherever they enter: ``grow``, the
:class:`~mmdyrep.core.Evolver`, the ``DyRepResNet`` backbone and the ``DyRepHook``. Each check raises
:class:`~mmdyrep.core.DyRepError` with ``where`` (who was given the value) and what is wrong."""
import math
from typing import Optional, Sequence, Tuple

from .branches import BRANCH_TYPES, DyRepError
from .saliency import METRICS


def _fail(where: str, message: str) -> DyRepError:
    return DyRepError(f'{where}: {message}' if where else message)


def check_metric(metric, where: str = '', exclude: Sequence[str] = ()) -> str:
    """A saliency metric name (Eq. 3-4 and the appendix's); ``exclude``: those ``where`` cannot compute."""
    allowed = [m for m in METRICS if m not in exclude]
    if metric not in allowed:
        raise _fail(where, f"unknown saliency metric {metric!r} (choose from {', '.join(allowed)})")
    return metric


def check_topk(topk, where: str = '') -> int:
    """How many ops grow per update: a positive int."""
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise _fail(where, f'topk must be a positive int, got {topk!r}')
    return topk


def check_branches(branches, where: str = '') -> Optional[Tuple[str, ...]]:
    """``None`` (every branch type that fits) or a non-empty list of distinct Table-1 branch types."""
    if branches is None:
        return None
    if isinstance(branches, str) or not isinstance(branches, Sequence):
        raise _fail(where, f'branches must be a list of branch types, got {branches!r}')
    unknown = [b for b in branches if b not in BRANCH_TYPES]
    if unknown:
        raise _fail(where, f"unknown branch types {unknown} (known: {', '.join(BRANCH_TYPES)})")
    if not branches:
        raise _fail(where, f"no branch types given (known: {', '.join(BRANCH_TYPES)})")
    if len(set(branches)) != len(branches):
        raise _fail(where, f'duplicate branch types in {list(branches)}')
    return tuple(branches)


def check_gamma_init(gamma_init, where: str = '') -> float:
    """γ of a new branch's last BN (Sec. 4.1: small, e.g. 0.01; 1.0 for the static baselines): a
    positive finite number (0 would give the branch no gradient through γ's product with its input)."""
    if isinstance(gamma_init, bool) or not (isinstance(gamma_init, (int, float)) and math.isfinite(gamma_init)
                                            and gamma_init > 0):
        raise _fail(where, f'gamma_init must be a positive number, got {gamma_init!r}')
    return float(gamma_init)


def check_dep_threshold(dep_threshold, where: str = '') -> float:
    """λ of the Dep rule (Sec. 4.2): a number >= 0."""
    if isinstance(dep_threshold, bool) or not (isinstance(dep_threshold, (int, float))
                                               and math.isfinite(dep_threshold) and dep_threshold >= 0):
        raise _fail(where, f'dep_threshold must be a number >= 0, got {dep_threshold!r}')
    return float(dep_threshold)


def check_max_depth(max_depth, where: str = '') -> Optional[int]:
    """How many blocks may contain a growing conv: ``None`` (any) or an int >= 0 (0: plain convs only)."""
    if max_depth is not None and (not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 0):
        raise _fail(where, f'max_depth must be None or an int >= 0, got {max_depth!r}')
    return max_depth


__all__ = ['check_branches', 'check_dep_threshold', 'check_gamma_init', 'check_max_depth', 'check_metric',
           'check_topk']
