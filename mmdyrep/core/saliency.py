"""Saliency of operations (paper Sec. 4.1 Eq. 3-4, Algorithm 1, appendix A.3 Eq. 11-15).

The per-op metrics are pure functions of a conv's weight ``θ`` and its gradient
``g = dL/dθ`` (or ``H·g`` for GraSP). Each returns a 0-dim tensor on the input's device and
never reads a value back to the host:

============  =====================================  ==========
``synflow``   ``sum(g ⊙ θ)``                         Eq. 3-4, 15 (the default)
``snip``      ``sum(|g ⊙ θ|)``                       Eq. 13
``grad_norm`` ``||g||_2``                            Eq. 12
``grasp``     ``-sum((H g) ⊙ θ)``                    Eq. 14
``random``    i.i.d. uniform [0, 1) per op           Eq. 11
``vote``      majority of the metrics above          A.3
============  =====================================  ==========

:class:`SaliencyAccumulator` sums the scores of every iteration (Algorithm 1 line 4), averages
them at decision time (line 7) and picks the top ops (line 8).

Pure PyTorch: no OpenMMLab imports.
"""
import math
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

METRICS = ('synflow', 'snip', 'grad_norm', 'grasp', 'random', 'vote')
#: The metrics 'vote' accumulates side by side; 'grasp' only counts in updates that get ``hessian_grads``.
VOTERS = ('synflow', 'snip', 'grad_norm', 'grasp')
_STATE_VERSION = 1


def _up(t: Tensor) -> Tensor:
    """Half / bfloat16 tensors are reduced in float32 (sums of many products overflow fp16)."""
    t = t.detach()
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def synflow(weight: Tensor, grad: Tensor) -> Tensor:
    """SynFlow saliency of one op, paper Eq. 3-4 (and Eq. 15).

    ``S_p(θ_i) = dL/dθ_i ⊙ θ_i`` (Eq. 3) summed over all the op's parameters (Eq. 4):
    ``S_o = sum(grad * weight)``, computed as one dot product: no weight-sized temporary (the
    elementwise product and its page faults cost 3-8x more on CPU, measured in the benchmark
    notes of ``docs/benchmarks.md``). Returns a 0-dim tensor on ``weight``'s device (no host sync).
    """
    g, w = _up(grad), _up(weight)
    dtype = torch.promote_types(g.dtype, w.dtype)
    return torch.dot(g.reshape(-1).to(dtype), w.reshape(-1).to(dtype))


def snip(weight: Tensor, grad: Tensor) -> Tensor:
    """SNIP saliency of one op, paper Eq. 13: ``S_o = sum(|grad * weight|)``.

    Returns a 0-dim tensor on ``weight``'s device (no host sync).
    """
    return torch.sum(torch.abs(_up(grad) * _up(weight)))


def grad_norm(weight: Tensor, grad: Tensor) -> Tensor:
    """Gradient-norm saliency of one op, paper Eq. 12: ``S_o = ||grad||_2`` (all entries).

    ``weight`` is unused (kept for a uniform signature). Returns a 0-dim tensor on
    ``grad``'s device (no host sync).
    """
    return torch.linalg.vector_norm(_up(grad))


def grasp(weight: Tensor, hessian_grad: Tensor) -> Tensor:
    """GraSP saliency of one op, paper Eq. 14: ``S_o = -sum((H g) ⊙ θ)``.

    ``hessian_grad`` is the op's slice of the Hessian-gradient product ``H·g`` (see
    :func:`hessian_gradient_product`). Returns a 0-dim tensor on ``weight``'s device.
    """
    return -torch.sum(_up(hessian_grad) * _up(weight))


def hessian_gradient_product(loss: Tensor, params: Sequence[Tensor]) -> List[Tensor]:
    """``H·g`` for each of ``params`` (the input of GraSP, Eq. 14), by double backward.

    ``g = dL/dθ`` is taken with ``create_graph=True``; then with ``z = Σ_i sum(g_i ⊙ stop(g_i))``
    we have ``dz/dθ = H·stop(g) = H·g``.

    This needs a ``loss`` whose autograd graph is still alive and differentiable twice, i.e.
    an *extra* forward/backward pass: it cannot be obtained from the ``.grad`` of an ordinary
    training step (whose graph has been freed). Parameters the loss does not depend on (or
    whose gradient does not depend on any parameter, e.g. a loss linear in them) get zeros.
    Returns detached tensors shaped like ``params``.
    """
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    terms = [(g * g.detach()).sum() for g in grads if g is not None and g.requires_grad]
    if not terms:
        return [torch.zeros_like(p) for p in params]
    z = torch.stack(terms).sum()
    hg = torch.autograd.grad(z, params, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, hg)]


_FUNCS: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    'synflow': synflow,
    'snip': snip,
    'grad_norm': grad_norm,
}


class SaliencyAccumulator:
    """Per-op saliency summed over iterations (Algorithm 1 line 4), averaged on demand (line 7).

    Storage: one table of shape ``(num_ops, 2 * C)`` per accumulator, where ``C`` is the number
    of accumulated metrics (1, or 4 for 'vote': synflow, snip, grad_norm, grasp). Row ``i`` is
    ``[sum_1 .. sum_C, count_1 .. count_C]`` for op ``self._order[i]``. Everything is float64
    (float32 on MPS) on the device of the ops' gradients ('random': on the CPU, where its
    generator lives); a checkpoint-loaded table moves there on the next update.

    One :meth:`update` computes every op's score(s), stacks them into one ``(N, C)`` tensor and
    adds it into the table with one kernel (``add_`` when the ops are the table's ops in order,
    else ``index_add_`` with a cached index): no host sync per op, and no host-to-device copy
    unless the set of ops changed.

    Non-finite updates: if *any* score of an update is inf/nan (e.g. an AMP overflow step), the
    whole update is dropped. This is decided on the device: ``finite = isfinite(scores).all()``
    and ``torch.where(finite, scores, 0)`` / ``finite`` as the count increment, so a dropped
    update adds 0 to the sums and 0 to the counts. That is why counts are tensors (in the table)
    rather than Python ints. An op whose every update was dropped has count 0 and is treated as
    having no score.

    Ops are identified by name and may appear or disappear between updates: each has its own
    count. Ops whose ``grad`` is ``None`` are skipped (not counted).

    Distributed training: :meth:`reduce_` sums the table over ranks with a single collective.
    Ops are packed in sorted-name order, so every rank must have accumulated exactly the same
    set of op names.

    Reading results (:meth:`averages`, :meth:`select`, ``len``, :meth:`state_dict`) copies the
    table to the host once: do it at decision time, not every iteration.
    """

    def __init__(self, metric: str = 'synflow', seed: int = 0):
        if metric not in METRICS:
            raise ValueError(f"unknown saliency metric '{metric}' (choose from {', '.join(METRICS)})")
        self.metric = metric
        self.seed = int(seed)
        self.columns: Tuple[str, ...] = VOTERS if metric == 'vote' else (metric, )
        self._generator = torch.Generator().manual_seed(self.seed)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all scores (after a decision). The random generator keeps its state, so the
        'random' metric draws new numbers in the next interval instead of repeating itself."""
        self._order: List[str] = []
        self._index: Dict[str, int] = {}
        self._table: Optional[Tensor] = None
        self._idx_cache: Optional[Tuple[Tuple[str, ...], torch.device, Tensor]] = None

    def __len__(self) -> int:
        """Number of ops with at least one counted score (host sync)."""
        return len(self._host_stats()[0])

    # ---------------------------------------------------------------- update
    def update(self,
               ops: Mapping[str, Tuple[Tensor, Optional[Tensor]]],
               hessian_grads: Optional[Mapping[str, Tensor]] = None,
               grad_scale: Optional[Tensor] = None) -> None:
        """Score one iteration's ops (Algorithm 1 line 4) and add the scores to the running sums.

        Args:
            ops: op name -> ``(weight, grad)``; ops whose ``grad`` is None are skipped.
            grad_scale: the gradients are taken times this factor (e.g. ``1 / loss_scale`` for
                AMP-scaled gradients; a 0-dim tensor, no host sync). synflow, snip and
                grad_norm are linear in the gradient, so the scores are scaled instead.
            hessian_grads: op name -> ``H·g`` for that op's weight (from
                :func:`hessian_gradient_product`). Required, for every scored op, by 'grasp';
                optional for 'vote' (grasp then votes too; if given it must cover every op).
        """
        names = sorted(n for n, (_, g) in ops.items() if g is not None)
        if not names:
            return
        use_grasp = self.metric == 'grasp' or (self.metric == 'vote' and hessian_grads is not None)
        if use_grasp:
            missing = names if hessian_grads is None else [n for n in names if hessian_grads.get(n) is None]
            if missing:
                raise ValueError(f"saliency metric '{self.metric}' needs hessian_grads (H·g, see "
                                 f'hessian_gradient_product) for every scored op; missing for {missing}')
        if self.metric == 'random':
            device = torch.device('cpu')
        else:
            device = ops[names[0]][1].device
        dtype = torch.float32 if device.type == 'mps' else torch.float64

        with torch.no_grad():
            cols: List[Tensor] = []
            present: List[bool] = []
            for metric in self.columns:
                if metric == 'random':
                    values = torch.rand(len(names), generator=self._generator, dtype=torch.float64)
                elif metric == 'grasp':
                    if not use_grasp:
                        values = None
                    else:
                        values = torch.stack([grasp(ops[n][0], hessian_grads[n]).to(device) for n in names])
                else:
                    fn = _FUNCS[metric]
                    values = torch.stack([fn(ops[n][0], ops[n][1]).to(device) for n in names])
                    if grad_scale is not None:
                        values = values * grad_scale.to(values)
                present.append(values is not None)
                cols.append(torch.zeros(len(names), dtype=dtype, device=device) if values is None else
                            values.to(dtype))
            scores = torch.stack(cols, dim=1)  # (N, C)
            finite = torch.isfinite(scores).all()
            scores = torch.where(finite, scores, torch.zeros((), dtype=dtype, device=device))
            inc = finite.to(dtype).expand(len(names))
            zeros = torch.zeros(len(names), dtype=dtype, device=device)
            counts = torch.stack([inc if p else zeros for p in present], dim=1)  # (N, C)
            rows = torch.cat([scores, counts], dim=1)  # (N, 2C)
            self._add_rows(names, rows)

    def _add_rows(self, names: List[str], rows: Tensor) -> None:
        new = [n for n in names if n not in self._index]
        if self._table is None:
            self._table = rows.new_zeros((0, rows.shape[1]))
        elif self._table.device != rows.device or self._table.dtype != rows.dtype:
            self._table = self._table.to(device=rows.device, dtype=rows.dtype)
            self._idx_cache = None
        if new:
            for n in new:
                self._index[n] = len(self._order)
                self._order.append(n)
            self._table = torch.cat([self._table, rows.new_zeros((len(new), rows.shape[1]))])
            self._idx_cache = None
        if names == self._order:
            self._table.add_(rows)
            return
        key = tuple(names)
        if self._idx_cache is None or self._idx_cache[0] != key or self._idx_cache[1] != rows.device:
            idx = torch.tensor([self._index[n] for n in names], dtype=torch.long, device=rows.device)
            self._idx_cache = (key, rows.device, idx)
        self._table.index_add_(0, self._idx_cache[2], rows)

    # ---------------------------------------------------------------- reduce
    def reduce_(self, all_reduce: Callable[[Tensor], Optional[Tensor]]) -> None:
        """Sum the scores and counts over ranks, with exactly one ``all_reduce`` call.

        ``all_reduce(t)`` must sum ``t`` over ranks synchronously, in place or by returning the
        result (e.g. ``torch.distributed.all_reduce``). The whole table (sums and counts of every
        op and metric) is packed into one flat tensor, ops in sorted-name order: every rank must
        have accumulated the same op names (checked by nothing: a mismatch mixes ops up). With
        no accumulated ops nothing is called (all ranks are then empty alike).
        """
        if self._table is None or not self._order:
            return
        order = sorted(self._order)
        if order != self._order:
            perm = torch.tensor([self._index[n] for n in order], dtype=torch.long, device=self._table.device)
            self._table = self._table.index_select(0, perm)
            self._order = order
            self._index = {n: i for i, n in enumerate(order)}
            self._idx_cache = None
        shape = self._table.shape
        flat = self._table.reshape(-1)  # a view: an in-place all_reduce updates the table
        out = all_reduce(flat)
        if isinstance(out, Tensor) and out is not flat:
            self._table = out.reshape(shape).to(self._table.dtype)
        else:
            self._table = flat.reshape(shape)

    # ---------------------------------------------------------------- decide
    def _host_stats(self) -> Tuple[List[str], Dict[str, Dict[str, float]]]:
        """(ops with a primary-metric count > 0, {metric: {op: average}}) with one host copy."""
        per_metric: Dict[str, Dict[str, float]] = {m: {} for m in self.columns}
        if self._table is None or not self._order:
            return [], per_metric
        c = len(self.columns)
        rows = self._table.detach().cpu().tolist()
        for name, row in zip(self._order, rows):
            for j, m in enumerate(self.columns):
                if row[c + j] > 0:
                    per_metric[m][name] = row[j] / row[c + j]
        scored = sorted(per_metric[self.columns[0]])
        return scored, per_metric

    def metric_averages(self) -> Dict[str, Dict[str, float]]:
        """``{metric: {op: sum / count}}`` (Algorithm 1 line 7) for every accumulated metric.

        For 'vote': synflow, snip, grad_norm, and grasp if any update brought ``hessian_grads``.
        Otherwise just ``{self.metric: ...}``. Ops with count 0 are left out.
        """
        _, per_metric = self._host_stats()
        if self.metric == 'vote':
            return {m: avg for m, avg in per_metric.items() if avg or m != 'grasp'}
        return per_metric

    def averages(self) -> Dict[str, float]:
        """Per-op average of the accumulator's metric (Algorithm 1 line 7).

        For 'vote': the number of votes each scored op gets with ``k=1`` (see :meth:`select`).
        """
        if self.metric == 'vote':
            return {n: float(v) for n, v in self.votes(1).items()}
        return self._host_stats()[1][self.metric]

    def votes(self, k: int = 1, exclude: Iterable[str] = ()) -> Dict[str, int]:
        """'vote' rule (A.3): each accumulated metric ranks the (non-excluded) ops it scored by
        average, descending, ties by name, and gives one vote to each of its top ``k``.

        Returns ``{op: votes}`` for every scored, non-excluded op (0 votes included).
        """
        _check_k(k)
        exclude = set(exclude)
        scored, per_metric = self._host_stats()
        votes = {n: 0 for n in scored if n not in exclude}
        for avg in per_metric.values():
            ranked = sorted((n for n in avg if n in votes), key=lambda n: (-avg[n], n))
            for n in ranked[:k]:
                votes[n] += 1
        return votes

    def select(self, k: int = 1, exclude: Iterable[str] = ()) -> List[str]:
        """Top-``k`` ops (Algorithm 1 line 8, generalised to k), highest first, ties by name.

        'vote': ops ordered by :meth:`votes` (each metric votes for its own top ``k``), ties
        broken by the synflow average (higher first), then name. Ops in ``exclude`` neither get
        votes nor are returned. Returns fewer than ``k`` names if fewer ops have scores.
        """
        _check_k(k)
        exclude = set(exclude)
        if self.metric == 'vote':
            votes = self.votes(k, exclude)
            syn = self._host_stats()[1]['synflow']
            order = sorted(votes, key=lambda n: (-votes[n], -syn.get(n, -math.inf), n))
        else:
            avg = self.averages()
            order = sorted((n for n in avg if n not in exclude), key=lambda n: (-avg[n], n))
        return order[:k]

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """JSON-able state (plain str / int / float / list / dict)::

            {'version': 1, 'metric': str, 'seed': int, 'columns': [metric, ...],
             'ops': {name: {'sums': [float per column], 'counts': [int per column]}},
             'generator_state': [int, ...]}   # torch.Generator byte state of 'random'

        ``ops`` keeps the table order (JSON objects keep insertion order), so a round trip
        through :meth:`load_state_dict` reproduces the accumulator exactly.
        """
        c = len(self.columns)
        rows = [] if self._table is None else self._table.detach().cpu().tolist()
        return {
            'version': _STATE_VERSION,
            'metric': self.metric,
            'seed': self.seed,
            'columns': list(self.columns),
            'ops': {
                name: {'sums': [float(v) for v in row[:c]], 'counts': [int(round(v)) for v in row[c:]]}
                for name, row in zip(self._order, rows)
            },
            'generator_state': self._generator.get_state().tolist(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` output. A state of another metric -> ``ValueError``."""
        if state.get('metric') != self.metric:
            raise ValueError(f"saliency state was saved with metric '{state.get('metric')}', "
                             f"but this accumulator uses '{self.metric}'")
        if list(state.get('columns', self.columns)) != list(self.columns):
            raise ValueError(f"saliency state has columns {state.get('columns')}, expected {list(self.columns)}")
        self.reset()
        self.seed = int(state.get('seed', self.seed))
        ops = state.get('ops', {})
        if ops:
            self._order = list(ops)
            self._index = {n: i for i, n in enumerate(self._order)}
            self._table = torch.tensor([list(v['sums']) + [float(x) for x in v['counts']] for v in ops.values()],
                                       dtype=torch.float64)
        if 'generator_state' in state:
            self._generator.set_state(torch.tensor(state['generator_state'], dtype=torch.uint8))
        else:
            self._generator.manual_seed(self.seed)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f'k must be a positive int, got {k!r}')


__all__ = [
    'METRICS', 'VOTERS', 'SaliencyAccumulator', 'grad_norm', 'grasp', 'hessian_gradient_product', 'snip', 'synflow'
]
