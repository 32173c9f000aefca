"""Saliency of operations (paper Sec. 4.1 Eq. 3-4, Algorithm 1, appendix A.3 Eq. 11-15).

An *operation* is OP-BN (Sec. 4.1: "all our branches follow an OP-BN paradigm"): a K×K conv together
with the norm that normalises its output (:func:`mmdyrep.core.norms.following_norms`), given as an
:class:`Operation` of ``(parameter, gradient)`` pairs: the conv's weight and bias, the norm's γ and
β. A parameter whose gradient is ``None`` (a frozen norm) adds nothing; a bare ``(θ, g)`` pair is a
one-tensor op with no norm.

================ =============================================== ===========================
``synflow``      ``Σ g ⊙ θ`` over the operation's parameters     Eq. 3-4, 15 (the paper's)
``synflow_conv`` ``Σ g ⊙ θ`` over the conv weight only           the authors' code
``taylor``       ``Σ_c (Σ_{θ of channel c} g ⊙ θ)²``             Molchanov et al. 2019 (default)
``snip``         ``Σ |g ⊙ θ|`` over the operation's parameters   Eq. 13
``grad_norm``    ``||g||_2`` over the operation's parameters     Eq. 12
``grasp``        ``-Σ (H g) ⊙ θ``                                Eq. 14
``random``       i.i.d. uniform [0, 1) per op                    Eq. 11
``vote``         majority of synflow, snip, grad_norm, grasp     A.3
================ =============================================== ===========================

Why the whole operation: a conv whose output a BN normalises with batch statistics does not change
the loss when its weight is scaled, so ``Σ g ⊙ θ`` over its weight alone (``synflow_conv``) is
zero up to an ε-sized shadow, ``ε / (σ² + ε)`` per channel, of the op's real effect, and in
float32 the rounding of the sum decides it. Over the whole operation the sum is the first-order
effect of scaling the op's output, whatever the BN's mode. The conv's own terms, which then add up
to exactly zero (:attr:`Operation.invariant`), are left out of the signed sums rather than summed
to rounding noise. With a running-statistics BN (mmdet's ``norm_eval=True``), no BN, or for the
origin of a DyRep block, the conv's terms are real and stay in.

Every metric is summed in float64 (float32 on MPS) from the gradients as they are (each product
``g ⊙ θ`` rounded once in the gradient's precision, float32 for half-precision gradients), and
returns a 0-dim tensor (no host sync). Each also has a *degeneracy ratio* ``|Σ| / Σ|·|``: the magnitude of its
score over the sum of the magnitudes of the terms it adds (1 for sums of non-negative terms; for
``taylor`` within each channel). Near float32's rounding (1e-7) the score is noise.

:class:`SaliencyAccumulator` sums the scores of every iteration (Algorithm 1 line 4), averages
them at decision time (line 7) and picks the top ops (line 8).

Pure PyTorch: no OpenMMLab imports.
"""
import math
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

METRICS = ('synflow', 'synflow_conv', 'taylor', 'snip', 'grad_norm', 'grasp', 'random', 'vote')
#: The metric the Evolver and the DyRepHook use unless told otherwise: the one whose ranking is stable
#: under training-mode BN (``tools/analysis/saliency_study.py``, docs/benchmarks.md "Saliency study").
DEFAULT_METRIC = 'taylor'
#: The metrics 'vote' accumulates side by side; 'grasp' only counts in updates that get ``hessian_grads``.
VOTERS = ('synflow', 'snip', 'grad_norm', 'grasp')
_STATE_VERSION = 2
#: Per (op, metric) the table keeps: sum of scores, count, sum of |score|, sum of the terms' magnitudes.
_STATS = 4

Pair = Tuple[Tensor, Optional[Tensor]]


class Operation(NamedTuple):
    """One OP-BN operation as ``(parameter, gradient)`` pairs: ``conv`` (weight first, then the
    bias if any) and ``norm`` (γ, β of the norm that normalises the conv's output; empty if none).

    ``invariant``: the conv's output is normalised by batch statistics on its own, so the loss
    does not change when the conv's parameters are scaled and ``Σ g ⊙ θ`` over them is exactly 0
    (Euler's theorem for a scale-invariant loss; the ε of the BN leaves an ε / (σ² + ε) shadow).
    Signed sums (synflow, taylor) then take that 0 as its exact value instead of adding up terms
    whose sum is float rounding. The origin of a DyRep block is never invariant on its own (its
    output is one summand before the block's norm)."""
    conv: List[Pair]
    norm: List[Pair] = []
    invariant: bool = False


Op = Union[Pair, Operation]


def as_operation(op: Op) -> Operation:
    """An :class:`Operation` (a bare ``(θ, g)`` pair is a one-tensor op with no norm)."""
    if isinstance(op, Operation):
        return op
    if len(op) == 2 and isinstance(op[0], Tensor) and (op[1] is None or isinstance(op[1], Tensor)):
        return Operation([(op[0], op[1])])
    raise TypeError(f'an op is an Operation or a (parameter, gradient) pair, got {type(op).__name__}')


def _wide(t: Tensor) -> Tensor:
    t = t.detach()
    return t.to(torch.float32 if t.device.type == 'mps' else torch.float64)


class OpTerms(NamedTuple):
    """The sums every metric is made of, for one op (0-dim / per-channel float64 tensors).

    ``channel`` / ``channel_abs``: ``Σ g ⊙ θ`` / ``Σ |g ⊙ θ|`` per output channel over the signed
    sum's parameters (the norm's, and the conv's unless :attr:`Operation.invariant`); ``conv`` /
    ``conv_abs``: the same over the conv weight only; ``all_abs``: ``Σ |g ⊙ θ|`` over every
    parameter of the op; ``grad_sq``: ``Σ g²`` over every parameter; ``grad_sum``: ``Σ g`` over
    every parameter, finite exactly when every gradient of the op is (an AMP overflow step)."""
    channel: Tensor
    channel_abs: Tensor
    conv: Tensor
    conv_abs: Tensor
    all_abs: Tensor
    grad_sq: Tensor
    grad_sum: Tensor


#: Which parts of :class:`OpTerms` each gradient metric reads (the others are not computed).
NEEDS = {'synflow': ('signed', ), 'taylor': ('signed', ), 'synflow_conv': ('conv', ), 'snip': ('all_abs', ),
         'grad_norm': ('grad_sq', )}


def op_terms(op: Op, scale: Optional[Tensor] = None, needs: Iterable[str] = ('signed', 'conv', 'all_abs',
                                                                             'grad_sq')) -> OpTerms:
    """:class:`OpTerms` of ``op`` from its gradients (times ``scale``, e.g. ``1 / loss_scale``).

    Every parameter has the op's output channels as its first dimension (conv weight and bias,
    norm γ and β), which is how the per-channel sums line up. Only the parts named in ``needs``
    (``signed``: channel sums, ``conv``, ``all_abs``, ``grad_sq``; see :data:`NEEDS`) are computed,
    the others are zero: for an invariant op the signed sums read only the norm's γ and β, so the
    default metric costs a few C-sized products per conv."""
    op = as_operation(op)
    needs = set(needs)
    weight, grad = op.conv[0]
    if grad is None:
        raise ValueError("an op's conv weight needs a gradient")
    channels = weight.shape[0]
    acc = torch.float32 if grad.device.type == 'mps' else torch.float64
    zeros = torch.zeros(channels, dtype=acc, device=grad.device)
    channel, channel_abs, all_abs, grad_sq = zeros, zeros, zeros, zeros.sum()
    conv = conv_abs = grad_sum = zeros.sum()
    for i, (param, g) in enumerate(list(op.conv) + list(op.norm)):
        if g is None:
            continue
        g = g.detach()
        grad_sum = grad_sum + g.sum()  # one read: the step's finiteness, even where nothing else reads g
        signed = 'signed' in needs and (i >= len(op.conv) or not op.invariant)
        if not (signed or 'all_abs' in needs or 'grad_sq' in needs or ('conv' in needs and i == 0)):
            continue
        if g.dtype in (torch.float16, torch.bfloat16):
            g = g.float()
        if 'grad_sq' in needs:
            grad_sq = grad_sq + torch.linalg.vector_norm(g.reshape(-1), dtype=acc)**2
        if not (signed or 'all_abs' in needs or ('conv' in needs and i == 0)):
            continue
        # each product rounded once in the gradient's precision, every sum in float64
        prod = (g * param.detach().to(g.dtype)).reshape(channels, -1)
        c = prod.sum(1, dtype=acc)
        a = prod.abs_().sum(1, dtype=acc)
        if 'all_abs' in needs:
            all_abs = all_abs + a
        if signed:
            channel, channel_abs = channel + c, channel_abs + a
        if i == 0:
            conv, conv_abs = c.sum(), a.sum()
    if scale is not None:  # the gradients' scale: linear in every sum, squared in grad_sq
        scale = scale.to(acc)
        channel, channel_abs, conv, conv_abs, all_abs = (t * scale for t in (channel, channel_abs, conv, conv_abs,
                                                                               all_abs))
        grad_sq = grad_sq * scale * scale
    return OpTerms(channel, channel_abs, conv, conv_abs, all_abs.sum(), grad_sq, grad_sum)


def metric_of(metric: str, terms: OpTerms) -> Tuple[Tensor, Tensor]:
    """``(score, sum of its terms' magnitudes)`` of ``metric`` (synflow, synflow_conv, taylor,
    snip or grad_norm) from an op's :class:`OpTerms`; their ratio is the degeneracy ratio."""
    if metric == 'synflow':
        return terms.channel.sum(), terms.channel_abs.sum()
    if metric == 'synflow_conv':
        return terms.conv, terms.conv_abs
    if metric == 'taylor':
        return (terms.channel**2).sum(), (terms.channel_abs**2).sum()
    if metric == 'snip':
        return terms.all_abs, terms.all_abs
    if metric == 'grad_norm':
        value = terms.grad_sq.sqrt()
        return value, value
    raise ValueError(f"metric_of: '{metric}' is not computed from gradients alone")


def _metric(name: str, op: Op) -> Tensor:
    return metric_of(name, op_terms(op, needs=NEEDS[name]))[0]


def synflow(op: Op) -> Tensor:
    """SynFlow saliency of one operation, paper Eq. 3-4 (and Eq. 15): ``S_p(θ_i) = dL/dθ_i ⊙ θ_i``
    (Eq. 3) summed over all the op's parameters (Eq. 4), conv and norm."""
    return _metric('synflow', op)


def synflow_conv(op: Op) -> Tensor:
    """``sum(g ⊙ θ)`` of the op's conv weight only (the authors' code). Degenerate under a BN that
    normalises with batch statistics (an ε-sized shadow of :func:`synflow`)."""
    return _metric('synflow_conv', op)


def taylor(op: Op) -> Tensor:
    """Squared first-order Taylor term per output channel, summed: ``Σ_c (Σ_{θ of c} g ⊙ θ)²``
    (Molchanov et al. 2019, over the whole OP-BN operation)."""
    return _metric('taylor', op)


def snip(op: Op) -> Tensor:
    """SNIP saliency, paper Eq. 13: ``S_o = sum(|g ⊙ θ|)`` over the op's parameters."""
    return _metric('snip', op)


def grad_norm(op: Op) -> Tensor:
    """Gradient-norm saliency, paper Eq. 12: ``S_o = ||g||_2`` over all the op's parameters."""
    return _metric('grad_norm', op)


def grasp_terms(op: Op, hessian_grads: Union[Tensor, Sequence[Optional[Tensor]]]) -> Tuple[Tensor, Tensor]:
    """``(GraSP score, sum of its terms' magnitudes)``; ``hessian_grads`` is ``H·g`` per parameter
    of ``op`` (conv then norm parameters, in order; a bare tensor for the conv weight)."""
    op = as_operation(op)
    params = [p for p, _ in list(op.conv) + list(op.norm)]
    hgs = [hessian_grads] if isinstance(hessian_grads, Tensor) else list(hessian_grads)
    value = total = None
    for param, hg in zip(params, hgs):
        if hg is None:
            continue
        prod = _wide(hg) * _wide(param)
        v, a = -prod.sum(), prod.abs().sum()
        value = v if value is None else value + v
        total = a if total is None else total + a
    if value is None:
        raise ValueError('grasp needs H·g for at least one parameter of the op')
    return value, total


def grasp(op: Op, hessian_grads: Union[Tensor, Sequence[Optional[Tensor]]]) -> Tensor:
    """GraSP saliency, paper Eq. 14: ``S_o = -sum((H g) ⊙ θ)`` over the op's parameters that have
    an ``H·g`` (see :func:`hessian_gradient_product`)."""
    return grasp_terms(op, hessian_grads)[0]


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


class SaliencyAccumulator:
    """Per-op saliency summed over iterations (Algorithm 1 line 4), averaged on demand (line 7).

    Storage: one float64 table (float32 on MPS) of shape ``(num_ops, C, 4)`` on the device of
    the ops' gradients ('random': on the CPU, where its generator lives), where ``C`` is the
    number of accumulated metrics (1, or 4 for 'vote': synflow, snip, grad_norm, grasp). For op
    ``self._order[i]`` and metric ``j``, ``table[i, j]`` is ``[Σ score, count, Σ |score|,
    Σ terms' magnitudes]``: the last two give the degeneracy ratio (:meth:`degeneracy`). A
    checkpoint-loaded table moves to the gradients' device on the next update.

    One :meth:`update` computes every op's score(s), stacks them into one ``(N, C, 4)`` tensor and
    adds it into the table with one kernel (``add_`` when the ops are the table's ops in order,
    else ``index_add_`` with a cached index): no host sync per op, and no host-to-device copy
    unless the set of ops changed.

    Non-finite updates: if *any* value of an update is inf/nan (e.g. an AMP overflow step), the
    whole update is dropped. This is decided on the device: ``finite = isfinite(rows).all()``
    and ``torch.where(finite, rows, 0)``, counts included, so a dropped update adds 0 to the sums
    and 0 to the counts. That is why counts are tensors (in the table) rather than Python ints.
    An op whose every update was dropped has count 0 and is treated as having no score.

    Ops are identified by name and may appear or disappear between updates: each has its own
    count. Ops whose conv weight has no gradient are skipped (not counted).

    Distributed training: :meth:`reduce_` sums the table over ranks with a single collective.
    Ops are packed in sorted-name order, so every rank must have accumulated exactly the same
    set of op names.

    Reading results (:meth:`averages`, :meth:`select`, ``len``, :meth:`state_dict`) copies the
    table to the host once: do it at decision time, not every iteration.
    """

    def __init__(self, metric: str = DEFAULT_METRIC, seed: int = 0):
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
               ops: Mapping[str, Op],
               hessian_grads: Optional[Mapping[str, Union[Tensor, Sequence[Optional[Tensor]]]]] = None,
               grad_scale: Optional[Tensor] = None) -> None:
        """Score one iteration's ops (Algorithm 1 line 4) and add the scores to the running sums.

        Args:
            ops: op name -> its :class:`Operation` (or a bare ``(weight, grad)`` pair); ops whose
                conv weight has no gradient are skipped.
            grad_scale: the gradients are taken times this factor (e.g. ``1 / loss_scale`` for
                AMP-scaled gradients; a 0-dim tensor, no host sync).
            hessian_grads: op name -> ``H·g`` for the op's parameters (from
                :func:`hessian_gradient_product`; a bare tensor for the first parameter). Required,
                for every scored op, by 'grasp'; optional for 'vote' (grasp then votes too; if
                given it must cover every op).
        """
        ops = {n: as_operation(op) for n, op in ops.items()}
        names = sorted(n for n, op in ops.items() if op.conv[0][1] is not None)
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
            device = ops[names[0]].conv[0][1].device
        dtype = torch.float32 if device.type == 'mps' else torch.float64

        with torch.no_grad():
            needs = {part for m in self.columns for part in NEEDS.get(m, ())}
            terms = {n: op_terms(ops[n], grad_scale, needs) for n in names} if needs else {}
            cols: List[Tensor] = []
            for metric in self.columns:
                if metric == 'random':
                    values = torch.rand(len(names), generator=self._generator, dtype=torch.float64)
                    pairs = torch.stack([values, values], dim=1)
                elif metric == 'grasp':
                    pairs = None if not use_grasp else torch.stack(
                        [torch.stack(grasp_terms(ops[n], hessian_grads[n])).to(device) for n in names])
                else:
                    pairs = torch.stack([torch.stack(metric_of(metric, terms[n])).to(device) for n in names])
                if pairs is None:
                    cols.append(torch.zeros(len(names), _STATS, dtype=dtype, device=device))
                    continue
                pairs = pairs.to(dtype)
                value, total = pairs[:, 0], pairs[:, 1]
                cols.append(torch.stack([value, torch.ones_like(value), value.abs(), total], dim=1))
            rows = torch.stack(cols, dim=1)  # (N, C, 4)
            finite = torch.isfinite(rows).all()
            if terms:  # every gradient of every op, read or not by the metric
                finite = finite & torch.isfinite(torch.stack([t.grad_sum for t in terms.values()]).to(device)).all()
            rows = torch.where(finite, rows, torch.zeros((), dtype=dtype, device=device))
            self._add_rows(names, rows)

    def _add_rows(self, names: List[str], rows: Tensor) -> None:
        new = [n for n in names if n not in self._index]
        if self._table is None:
            self._table = rows.new_zeros((0, ) + tuple(rows.shape[1:]))
        elif self._table.device != rows.device or self._table.dtype != rows.dtype:
            self._table = self._table.to(device=rows.device, dtype=rows.dtype)
            self._idx_cache = None
        if new:
            for n in new:
                self._index[n] = len(self._order)
                self._order.append(n)
            self._table = torch.cat([self._table, rows.new_zeros((len(new), ) + tuple(rows.shape[1:]))])
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
        result (e.g. ``torch.distributed.all_reduce``). The whole table (every statistic of every
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
        self._table = self._table.contiguous()
        shape = self._table.shape
        flat = self._table.reshape(-1)  # a view: an in-place all_reduce updates the table
        out = all_reduce(flat)
        if isinstance(out, Tensor) and out is not flat:
            self._table = out.reshape(shape).to(self._table.dtype)
        else:
            self._table = flat.reshape(shape)

    # ---------------------------------------------------------------- decide
    def _host_table(self) -> List[List[List[float]]]:
        return [] if self._table is None else self._table.detach().cpu().tolist()

    def _host_stats(self) -> Tuple[List[str], Dict[str, Dict[str, float]]]:
        """(ops with a primary-metric count > 0, {metric: {op: average}}) with one host copy."""
        per_metric: Dict[str, Dict[str, float]] = {m: {} for m in self.columns}
        for name, row in zip(self._order, self._host_table()):
            for j, m in enumerate(self.columns):
                total, count = row[j][0], row[j][1]
                if count > 0:
                    per_metric[m][name] = total / count
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

    def degeneracy(self, metric: Optional[str] = None) -> Dict[str, float]:
        """``{op: Σ_t |S_t| / Σ_t Σ|terms_t|}`` of ``metric`` (default: the first column, synflow
        for 'vote'): how much of what the score adds up survives its cancellations, over the
        accumulated updates. Near 1e-7 (float32 rounding) the score is noise. Ops whose terms
        were all zero are left out."""
        j = self.columns.index(metric or self.columns[0])
        out = {}
        for name, row in zip(self._order, self._host_table()):
            _, count, magnitude, terms = row[j]
            if count > 0 and terms > 0:
                out[name] = magnitude / terms
        return out

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

    def ranking(self, exclude: Iterable[str] = (), k: int = 1) -> List[str]:
        """Every scored op, most salient first (:meth:`select` with no limit; for 'vote' each metric
        votes for its own top ``k``)."""
        exclude = set(exclude)
        if self.metric == 'vote':
            votes = self.votes(k, exclude)
            syn = self._host_stats()[1]['synflow']
            return sorted(votes, key=lambda n: (-votes[n], -syn.get(n, -math.inf), n))
        avg = self.averages()
        return sorted((n for n in avg if n not in exclude), key=lambda n: (-avg[n], n))

    def select(self, k: int = 1, exclude: Iterable[str] = ()) -> List[str]:
        """Top-``k`` ops (Algorithm 1 line 8, generalised to k), highest first, ties by name.

        'vote': ops ordered by :meth:`votes` (each metric votes for its own top ``k``), ties
        broken by the synflow average (higher first), then name. Ops in ``exclude`` neither get
        votes nor are returned. Returns fewer than ``k`` names if fewer ops have scores.
        """
        _check_k(k)
        return self.ranking(exclude, k)[:k]

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """JSON-able state (plain str / int / float / list / dict)::

            {'version': 2, 'metric': str, 'seed': int, 'columns': [metric, ...],
             'ops': {name: {'sums': [float per column], 'counts': [int per column],
                            'abs_sums': [float per column], 'term_sums': [float per column]}},
             'generator_state': [int, ...]}   # torch.Generator byte state of 'random'

        ``ops`` keeps the table order (JSON objects keep insertion order), so a round trip
        through :meth:`load_state_dict` reproduces the accumulator exactly. Version 1 states
        (without ``abs_sums`` / ``term_sums``) load with those at 0.
        """
        ops = {}
        for name, row in zip(self._order, self._host_table()):
            ops[name] = {'sums': [float(c[0]) for c in row], 'counts': [int(round(c[1])) for c in row],
                         'abs_sums': [float(c[2]) for c in row], 'term_sums': [float(c[3]) for c in row]}
        return {
            'version': _STATE_VERSION,
            'metric': self.metric,
            'seed': self.seed,
            'columns': list(self.columns),
            'ops': ops,
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
            c = len(self.columns)
            self._order = list(ops)
            self._index = {n: i for i, n in enumerate(self._order)}
            rows = []
            for v in ops.values():
                stats = (v['sums'], [float(x) for x in v['counts']], v.get('abs_sums', [0.0] * c),
                         v.get('term_sums', [0.0] * c))
                rows.append([[float(s[j]) for s in stats] for j in range(c)])
            self._table = torch.tensor(rows, dtype=torch.float64)
        if 'generator_state' in state:
            self._generator.set_state(torch.tensor(state['generator_state'], dtype=torch.uint8))
        else:
            self._generator.manual_seed(self.seed)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f'k must be a positive int, got {k!r}')


def median(values: Iterable[float]) -> Optional[float]:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def top(scores: Mapping[str, float], k: int = 5) -> List[str]:
    """The ``k`` highest-scoring ops, ties by name (as :meth:`SaliencyAccumulator.select`)."""
    return sorted(scores, key=lambda n: (-scores[n], n))[:k]


__all__ = [
    'DEFAULT_METRIC', 'METRICS', 'NEEDS', 'VOTERS', 'OpTerms', 'Operation', 'SaliencyAccumulator',
    'as_operation', 'grad_norm', 'grasp', 'grasp_terms', 'hessian_gradient_product', 'median', 'metric_of', 'op_terms',
    'snip', 'top',
    'synflow', 'synflow_conv', 'taylor'
]
