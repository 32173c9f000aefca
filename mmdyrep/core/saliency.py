"""Saliency of operations (paper Eq. 3-4, appendix A.3 Eq. 11-15).

Per-op metrics are pure functions of a conv's weight and its gradient returning a 0-dim
tensor on the same device (no host sync). :class:`SaliencyAccumulator` sums them over
training iterations (Algorithm 1 line 4) and averages at decision time (line 7).
"""
import math
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

METRICS = ('synflow', 'snip', 'grad_norm', 'grasp', 'random', 'vote')
#: Metrics that 'vote' combines (grasp joins when Hessian-gradient products are given).
VOTERS = ('synflow', 'snip', 'grad_norm')


def synflow(weight: Tensor, grad: Tensor) -> Tensor:
    """Eq. 3-4 (15): ``S = sum(dL/dθ ⊙ θ)`` over the op's parameters."""
    return (grad * weight).sum()


def snip(weight: Tensor, grad: Tensor) -> Tensor:
    """Eq. 13: ``S = sum(|dL/dθ ⊙ θ|)``."""
    return (grad * weight).abs().sum()


def grad_norm(weight: Tensor, grad: Tensor) -> Tensor:
    """Eq. 12: ``S = ||dL/dθ||_2``."""
    return grad.norm(2)


def grasp(weight: Tensor, hessian_grad: Tensor) -> Tensor:
    """Eq. 14: ``S = -sum((H dL/dθ) ⊙ θ)``, with ``hessian_grad = H·g``."""
    return -(hessian_grad * weight).sum()


def hessian_gradient_product(loss: Tensor, params: Sequence[Tensor]) -> List[Tensor]:
    """``H·g`` for each of ``params`` by double backward (GraSP).

    ``g = dL/dθ`` is taken with ``create_graph=True``, then ``H·g = d(g·stop(g))/dθ``.
    Needs a loss whose graph is still alive: an extra forward/backward, not available from
    the gradients of an ordinary training step."""
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    z = sum((g * g.detach()).sum() for g in grads)
    return list(torch.autograd.grad(z, params))


_FUNCS = {'synflow': synflow, 'snip': snip, 'grad_norm': grad_norm}


class SaliencyAccumulator:
    """Per-op saliency summed over iterations and averaged on demand.

    Sums and counts are kept per metric as tensors on the ops' device; one update stacks the
    scores of all its ops, so an update costs a few kernel launches and no host sync. An
    update with any non-finite score (e.g. an AMP overflow step) adds nothing: a
    ``torch.where`` on its finiteness flag zeroes both its scores and its counts.

    Ops are identified by name and may come and go between updates (each has its own count).
    For distributed training every rank must score the same op names; :meth:`reduce_` sums
    over ranks with one collective.
    """

    def __init__(self, metric: str = 'synflow', seed: int = 0):
        if metric not in METRICS:
            raise ValueError(f"unknown saliency metric '{metric}' (choose from {', '.join(METRICS)})")
        self.metric = metric
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all scores (after a decision)."""
        self._sums: Dict[str, Dict[str, Tensor]] = {}  # metric -> op -> 0-dim tensor
        self._counts: Dict[str, Tensor] = {}  # op -> 0-dim tensor

    def _metrics(self, with_grasp: bool) -> Tuple[str, ...]:
        if self.metric == 'vote':
            return VOTERS + (('grasp', ) if with_grasp else ())
        return (self.metric, )

    def __len__(self) -> int:
        return len(self._counts)

    # ---------------------------------------------------------------- update
    def update(self,
               ops: Mapping[str, Tuple[Tensor, Optional[Tensor]]],
               hessian_grads: Optional[Mapping[str, Tensor]] = None) -> None:
        """Score each op ``name -> (weight, grad)`` of one iteration; ops without grad are skipped."""
        names = [n for n, (_, g) in ops.items() if g is not None]
        if not names:
            return
        if self.metric == 'grasp' and (hessian_grads is None or any(n not in hessian_grads for n in names)):
            raise ValueError("metric 'grasp' needs hessian_grads (H·g, see hessian_gradient_product) for every op")
        with_grasp = hessian_grads is not None and all(n in hessian_grads for n in names)
        device = ops[names[0]][0].device
        scores = {}
        with torch.no_grad():
            for metric in self._metrics(with_grasp):
                if metric == 'random':
                    values = torch.rand(len(names), generator=self.generator).to(device)
                elif metric == 'grasp':
                    values = torch.stack([grasp(ops[n][0], hessian_grads[n]) for n in names])
                else:
                    fn = _FUNCS[metric]
                    values = torch.stack([fn(ops[n][0].detach(), ops[n][1]) for n in names])
                scores[metric] = values.float()
            finite = torch.stack([torch.isfinite(v).all() for v in scores.values()]).all()
            for metric, values in scores.items():
                values = torch.where(finite, values, torch.zeros_like(values))
                sums = self._sums.setdefault(metric, {})
                for i, n in enumerate(names):
                    sums[n] = sums[n] + values[i] if n in sums else values[i]
            inc = finite.float()
            for n in names:
                self._counts[n] = self._counts[n] + inc if n in self._counts else inc.clone()

    # ---------------------------------------------------------------- reduce
    def reduce_(self, all_reduce: Callable[[Tensor], Tensor]) -> None:
        """Sum scores and counts over processes with one ``all_reduce`` call (sorted op names)."""
        names = sorted(self._counts)
        if not names:
            return
        metrics = sorted(self._sums)
        zero = self._counts[names[0]].new_zeros(())
        flat = torch.stack([self._counts[n] for n in names] +
                           [self._sums[m].get(n, zero) for m in metrics for n in names])
        out = all_reduce(flat)
        flat = out if out is not None else flat
        k = len(names)
        self._counts = {n: flat[i] for i, n in enumerate(names)}
        for j, m in enumerate(metrics):
            self._sums[m] = {n: flat[k * (j + 1) + i] for i, n in enumerate(names)}

    # ---------------------------------------------------------------- decide
    def metric_averages(self) -> Dict[str, Dict[str, float]]:
        """``{metric: {op: average}}`` (ops never counted are left out)."""
        counts = {n: float(c) for n, c in self._counts.items()}
        return {
            m: {n: float(s) / counts[n] for n, s in sums.items() if counts.get(n, 0) > 0}
            for m, sums in self._sums.items()
        }

    def averages(self) -> Dict[str, float]:
        """Per-op average of the metric (for 'vote': the votes of :meth:`select`'s rule with k=1)."""
        if self.metric == 'vote':
            return {n: float(v) for n, v in self._votes(1).items()}
        return self.metric_averages().get(self.metric, {})

    def _votes(self, k: int) -> Dict[str, int]:
        per_metric = self.metric_averages()
        votes = {n: 0 for avg in per_metric.values() for n in avg}
        for avg in per_metric.values():
            for n in sorted(avg, key=lambda n: (-avg[n], n))[:k]:
                votes[n] += 1
        return votes

    def select(self, k: int = 1, exclude: Iterable[str] = ()) -> List[str]:
        """Top-k ops, descending; ties broken by name. 'vote': each metric votes for its top-k,
        ops ordered by votes, then by synflow average, then by name."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f'k must be a positive int, got {k!r}')
        exclude = set(exclude)
        if self.metric == 'vote':
            votes = self._votes(k)
            syn = self.metric_averages().get('synflow', {})
            order = sorted(votes, key=lambda n: (-votes[n], -syn.get(n, -math.inf), n))
        else:
            avg = self.averages()
            order = sorted(avg, key=lambda n: (-avg[n], n))
        return [n for n in order if n not in exclude][:k]

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """Plain, JSON-able state (sums, counts, the random generator)."""
        return {
            'metric': self.metric,
            'seed': self.seed,
            'counts': {n: float(c) for n, c in self._counts.items()},
            'sums': {m: {n: float(s) for n, s in sums.items()} for m, sums in self._sums.items()},
            'generator': self.generator.get_state().tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get('metric') != self.metric:
            raise ValueError(f"saliency state was saved with metric '{state.get('metric')}', "
                             f"this accumulator uses '{self.metric}'")
        self.seed = state.get('seed', self.seed)
        self._counts = {n: torch.tensor(c) for n, c in state['counts'].items()}
        self._sums = {m: {n: torch.tensor(s) for n, s in sums.items()} for m, sums in state['sums'].items()}
        self.generator.set_state(torch.tensor(state['generator'], dtype=torch.uint8))
