"""Comparing saliency metrics (the saliency study, ``tools/analysis/saliency_study.py``): plain data only.

A *window* is one accumulation of a metric over some optimizer steps: ``{op: average score}``
and ``{op: degeneracy ratio}`` (see :meth:`mmdyrep.core.SaliencyAccumulator.degeneracy`).
"""
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from mmdyrep.core.saliency import median, top

#: Targets of the default metric (issue 11): degeneracy ratio, rank agreement of two windows.
DEGENERACY_TARGET = 1e-2
SPEARMAN_TARGET = 0.6


def ranks(values: Sequence[float]) -> List[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Mapping[str, float], b: Mapping[str, float]) -> Optional[float]:
    """Spearman's rank correlation of two score tables over the ops both have (``None`` for fewer
    than two, or when one side is constant)."""
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    ra, rb = ranks([a[n] for n in common]), ranks([b[n] for n in common])
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma)**2 for x in ra), sum((y - mb)**2 for y in rb)
    if va == 0 or vb == 0:
        return None
    return cov / math.sqrt(va * vb)


def kind_counts(names: Iterable[str], kinds: Mapping[str, str]) -> Dict[str, int]:
    """How many of ``names`` are of each kind (plain / origin / inner)."""
    counts: Dict[str, int] = {}
    for name in names:
        kind = kinds.get(name, 'unknown')
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def judge(metric: Mapping) -> Dict[str, Optional[bool]]:
    """Pass / fail of one metric's study entry against the default metric's targets."""
    deg, rho = metric.get('degeneracy'), metric.get('spearman')
    return {
        'degeneracy': None if deg is None else deg >= DEGENERACY_TARGET,
        'spearman': None if rho is None else rho >= SPEARMAN_TARGET,
        'precision': metric.get('precision_agree'),
    }


__all__ = ['DEGENERACY_TARGET', 'SPEARMAN_TARGET', 'judge', 'kind_counts', 'median', 'ranks', 'spearman', 'top']
