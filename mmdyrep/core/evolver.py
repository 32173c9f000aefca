"""Algorithm 1 without a training loop.

The caller trains; after each backward it calls :meth:`Evolver.record` (line 4), and every
``t`` epochs / iterations it calls :meth:`Evolver.step` (lines 6-10): average the scores,
grow the top-k ops with BN calibration, then cut weak branches. Distributed training plugs in
through small callables (``all_reduce``, ``broadcast``, ``sync_norms``); nothing here knows
about a runner or a process group.
"""
from typing import Callable, Dict, List, Optional, Sequence

from torch import Tensor, nn

from .block import DyRepBlock, cut, grow, growable_convs
from .branches import NormFactory
from .norms import candidate_kind, following_norms, uses_batch_stats
from .options import (check_branches, check_dep_threshold, check_gamma_init, check_max_depth, check_metric,
                      check_topk)
from .saliency import DEFAULT_METRIC, Operation, SaliencyAccumulator


def nesting_depth(name: str, model: nn.Module) -> int:
    """How many DyRep blocks contain the module ``name``."""
    depth, prefix = 0, ''
    for part in name.split('.')[:-1]:
        prefix = f'{prefix}.{part}' if prefix else part
        if isinstance(model.get_submodule(prefix), DyRepBlock):
            depth += 1
    return depth


class Evolver:
    """Scores the candidate convs of ``model`` and evolves it (paper Algorithm 1).

    Args:
        model: the bare model (not a DDP wrapper).
        metric: saliency metric (:data:`METRICS`, default :data:`DEFAULT_METRIC`, ``'taylor'``).
        topk: ops grown per update.
        branches: branch types added on a grow (default: all that fit, Table 1).
        gamma_init: gamma of each new branch's last BN (Sec. 4.1, 0.01).
        dep: whether to cut (Sec. 4.2) after each grow.
        dep_threshold: lambda of Sec. 4.2 (0.02).
        candidate_filter: ``name -> bool``; which growable convs may grow (default: all).
        max_depth: how many blocks may contain a growing conv (``None``: any depth).
        norm_factory: builds new BNs (default: the model's ``dyrep_norm_factory`` or BatchNorm2d).
        seed: seed of the 'random' metric.
        example_input: a batch the model accepts, for the one eval-mode forward per structure that
            finds the norm following each candidate (:func:`~mmdyrep.core.norms.following_norms`;
            default: a zero 64×64 image).

    Each candidate is scored as an OP-BN operation (Sec. 4.1): its conv's weight and bias with
    the γ and β of the norm that normalises the conv's output (:meth:`ops`).
    """

    def __init__(self,
                 model: nn.Module,
                 metric: str = DEFAULT_METRIC,
                 topk: int = 1,
                 branches: Optional[Sequence[str]] = None,
                 gamma_init: float = 0.01,
                 dep: bool = True,
                 dep_threshold: float = 0.02,
                 candidate_filter: Optional[Callable[[str], bool]] = None,
                 max_depth: Optional[int] = None,
                 norm_factory: Optional[NormFactory] = None,
                 seed: int = 0,
                 example_input: Optional[Tensor] = None):
        check_metric(metric, 'Evolver')
        check_topk(topk, 'Evolver')
        check_branches(branches, 'Evolver')
        check_gamma_init(gamma_init, 'Evolver')
        check_dep_threshold(dep_threshold, 'Evolver')
        check_max_depth(max_depth, 'Evolver')
        self.model = model
        self.topk = topk
        self.branches = tuple(branches) if branches is not None else None
        self.gamma_init = gamma_init
        self.dep = dep
        self.dep_threshold = dep_threshold
        self.candidate_filter = candidate_filter
        self.max_depth = max_depth
        self.norm_factory = norm_factory
        self.scores = SaliencyAccumulator(metric, seed=seed)
        self.example_input = example_input
        self._candidates: Optional[Dict[str, nn.Conv2d]] = None
        self._norms: Optional[Dict[str, Optional[str]]] = None
        self._ops: Optional[Dict[str, tuple]] = None

    @property
    def metric(self) -> str:
        return self.scores.metric

    def candidates(self) -> Dict[str, nn.Conv2d]:
        """The convs that may grow now (cached until the structure changes)."""
        if self._candidates is None:
            found = growable_convs(self.model)
            if self.candidate_filter is not None:
                found = {n: m for n, m in found.items() if self.candidate_filter(n)}
            if self.max_depth is not None:
                found = {n: m for n, m in found.items() if nesting_depth(n, self.model) <= self.max_depth}
            self._candidates = found
        return self._candidates

    def structure_changed(self) -> None:
        self._candidates = None
        self._norms = None
        self._ops = None

    def norms(self) -> Dict[str, Optional[str]]:
        """``{candidate: the norm that normalises its output, or None}`` (one traced forward per
        structure, cached until the structure changes)."""
        if self._norms is None:
            found = following_norms(self.model, self.example_input)
            self._norms = {name: found.get(name) for name in self.candidates()}
        return self._norms

    def kinds(self) -> Dict[str, str]:
        """``{candidate: 'plain' | 'origin' | 'inner'}`` (see :func:`~mmdyrep.core.norms.candidate_kind`)."""
        return {name: candidate_kind(self.model, name) for name in self.candidates()}

    def norm_modes(self) -> Dict[str, str]:
        """``{candidate: 'batch-statistics' | 'running-statistics' | 'no-norm'}``: how the norm that
        normalises each candidate's output works now."""
        modes = {}
        for name, norm in self.norms().items():
            if norm is None:
                modes[name] = 'no-norm'
            else:
                modes[name] = ('batch-statistics' if uses_batch_stats(self.model.get_submodule(norm)) else
                               'running-statistics')
        return modes

    def ops(self) -> Dict[str, Operation]:
        """Each candidate's OP-BN operation (Sec. 4.1) with its parameters' current gradients: the
        conv's weight and bias, the γ and β of the norm that normalises its output, and whether the
        conv alone is normalised by batch statistics now (:attr:`Operation.invariant`)."""
        if self._ops is None:
            norms, kinds = self.norms(), self.kinds()
            parts = {}
            for name, conv in self.candidates().items():
                norm = self.model.get_submodule(norms[name]) if norms[name] is not None else None
                norm_params = [] if norm is None else [
                    p for p in (getattr(norm, 'weight', None), getattr(norm, 'bias', None))
                    if isinstance(p, nn.Parameter)]
                conv_params = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
                parts[name] = (conv_params, norm_params, norm if kinds[name] != 'origin' else None)
            self._ops = parts
        return {
            name: Operation([(p, p.grad) for p in conv], [(p, p.grad) for p in norm],
                            direct is not None and uses_batch_stats(direct))
            for name, (conv, norm, direct) in self._ops.items()
        }

    def record(self,
               hessian_grads: Optional[Dict[str, Sequence[Tensor]]] = None,
               grad_scale: Optional[Tensor] = None) -> None:
        """Algorithm 1 line 4: score every candidate operation from its parameters' current
        gradients (``grad_scale``: e.g. ``1 / loss_scale`` when the gradients are AMP-scaled;
        ``hessian_grads``: ``H·g`` per parameter of the op, conv's then norm's, for 'grasp')."""
        self.scores.update(self.ops(), hessian_grads, grad_scale=grad_scale)

    def step(self,
             calibrate: Optional[Callable[[nn.Module], None]] = None,
             all_reduce: Optional[Callable[[Tensor], Tensor]] = None,
             broadcast: Optional[Callable[[List[nn.Module]], None]] = None,
             sync_norms: Optional[Callable[[List[nn.Module]], None]] = None,
             grow_ops: bool = True) -> dict:
        """Algorithm 1 lines 7-10. Returns a report: ``metric``, ``scores`` (``{metric: {op: average}}``),
        ``degeneracy`` (``{op: ratio}``, see :meth:`SaliencyAccumulator.degeneracy`), ``kinds`` and
        ``norm_modes`` of the candidates at decision time, ``grown`` (``{conv: [branches]}``) and ``cut``.

        ``all_reduce`` sums a tensor over processes (scores are reduced once, here);
        ``broadcast(branches)`` makes the new branches' initial weights equal on all processes
        before calibration; ``sync_norms(norms)`` averages calibrated statistics."""
        if all_reduce is not None:
            self.scores.reduce_(all_reduce)
        averages = self.scores.metric_averages()
        chosen = self.scores.select(self.topk) if grow_ops else []
        degeneracy = self.scores.degeneracy()
        kinds, modes = self.kinds(), self.norm_modes()
        grown = self.grow(chosen, calibrate, broadcast, sync_norms) if chosen else {}
        cuts = cut(self.model, self.dep_threshold) if self.dep else {}
        self.scores.reset()
        self.structure_changed()
        return {'metric': self.metric, 'scores': averages, 'degeneracy': degeneracy, 'kinds': kinds,
                'norm_modes': modes, 'grown': grown, 'cut': cuts}

    def grow(self,
             names: Sequence[str],
             calibrate: Optional[Callable[[nn.Module], None]] = None,
             broadcast: Optional[Callable[[List[nn.Module]], None]] = None,
             sync_norms: Optional[Callable[[List[nn.Module]], None]] = None) -> Dict[str, List[str]]:
        """Algorithm 1 line 8 for the convs ``names`` (Rep, Eq. 5-6, with BN calibration), with this
        evolver's branches, gamma and BN factory; convs with no branch that fits are skipped. Returns
        the grown convs and their branch names (what :meth:`step` chose, or a recorded structure)."""
        blocks = grow(self.model, names, self.branches, self.gamma_init, calibrate=calibrate,
                      norm_factory=self.norm_factory, broadcast=broadcast, sync_norms=sync_norms, skip_unfit=True)
        self.structure_changed()
        return {name: list(block.branches) for name, block in blocks.items()}

    def state_dict(self) -> dict:
        return {'scores': self.scores.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scores.load_state_dict(state['scores'])
        self.structure_changed()


__all__ = ['Evolver', 'nesting_depth']
