"""What a user sees of the evolution: the history record of the backbone now, the log lines and
scalars of an update (which conv grew, which branches were cut, params / FLOPs now and averaged so
far) and the one warning for a metric that is numerically degenerate. Text and numbers only: the
hook sends them to mmengine's logger and visualizer."""
from typing import Dict, List, Mapping, Optional, Sequence

from torch import nn

from mmdyrep.core import extract_structure, iter_blocks
from mmdyrep.core.history import make_record, time_average
from mmdyrep.core.saliency import median, top
from mmdyrep.models.complexity import count, deployed_count

#: A score whose magnitude is below this fraction of the magnitudes it sums is rounding-sized.
DEGENERATE_RATIO = 1e-4


def backbone_record(backbone: nn.Module, input_shape: Sequence[int], it: int, epoch: int, grown: Mapping,
                    cut: Mapping, change: Optional[float] = None, deployed: Optional[dict] = None) -> dict:
    """The history record (:func:`~mmdyrep.core.history.make_record`) of ``backbone`` now: params /
    FLOPs for one input of ``input_shape``, deployed ones (``deployed``, else counted), structure and
    branch importances."""
    return make_record(it, epoch, grown, cut, count(backbone, input_shape),
                       deployed or deployed_count(backbone, input_shape), extract_structure(backbone),
                       {n: b.importances() for n, b in iter_blocks(backbone)}, change)


def degeneracy_warning(metric: str, report: Mapping, ratio: float = DEGENERATE_RATIO) -> Optional[str]:
    """The warning when most candidates' scores in ``report`` (of :meth:`Evolver.step`) were numerically
    degenerate (``|sum| / sum|terms| < ratio``), else ``None``."""
    ratios = report['degeneracy']
    low = [n for n, r in ratios.items() if r < ratio]
    if not ratios or len(low) * 2 <= len(ratios):
        return None
    modes = sorted(set(report['norm_modes'].values()))
    return (f"metric '{metric}' is numerically degenerate for {len(low)} of {len(ratios)} candidates "
            f'(|sum| / sum|terms| < {ratio:g}; median {median(ratios.values()):.1e}) '
            f'with norms in {"/".join(modes)} mode: its choice is decided by float rounding, not by the loss. '
            + ("With batch-statistics BN the loss does not depend on a conv's scale, so 'synflow_conv' is ~0; "
               "use metric='synflow' (the conv with its BN)." if 'batch-statistics' in modes else ''))


def top_scores(report: Mapping, metric: str, k: int = 5) -> str:
    """The ``k`` best candidates of ``report`` by ``metric`` (synflow for 'vote') with score and kind."""
    scores = report['scores'].get(metric) if metric != 'vote' else report['scores'].get('synflow')
    if not scores:
        return 'none'
    return ', '.join(f'{n} {scores[n]:.3e} ({report["kinds"].get(n, "?")})' for n in top(scores, k))


def _averages(records: Sequence[Mapping]) -> Dict[str, float]:
    now, start = records[-1]['iter'], records[0]['iter']
    return {k: time_average(records, k, now, start) for k in ('params', 'flops')}


def update_lines(records: Sequence[Mapping], report: Mapping, metric: str, update: str, added: List[str],
                 removed: int, seconds: float) -> List[str]:
    """The log lines of the update whose record is ``records[-1]`` (``update``: e.g. 'update 3 at epoch 15')."""
    record, avg = records[-1], _averages(records)
    grown = ', '.join(f'{k} <- [{" ".join(v)}]' for k, v in report['grown'].items()) or 'nothing'
    cut = ', '.join(f'{k} -x [{" ".join(v)}]' for k, v in report['cut'].items()) or 'nothing'
    change = f', eval-output change {record["eval_change"]:.1e}' if record['eval_change'] is not None else ''
    shown = metric if metric != 'vote' else 'vote (synflow shown)'
    return [
        f'{update}: top-5 by {shown}: {top_scores(report, metric)}',
        f'{update}: grew {grown}; cut {cut}; optimizer +{len(added)}/-{removed} params{change}; {seconds:.1f}s',
        f'backbone now {record["params"] / 1e6:.2f}M params, {record["flops"] / 1e9:.2f} GFLOPs '
        f'(average so far {avg["params"] / 1e6:.2f}M, {avg["flops"] / 1e9:.2f} G; deployed '
        f'{record["deployed_params"] / 1e6:.2f}M, {record["deployed_flops"] / 1e9:.2f} G)',
    ]


def update_scalars(records: Sequence[Mapping], num_blocks: int) -> Dict[str, float]:
    """The visualizer scalars of the update whose record is ``records[-1]``."""
    record, avg = records[-1], _averages(records)
    scalars = {'dyrep/params': record['params'], 'dyrep/flops': record['flops'],
               'dyrep/avg_params': avg['params'], 'dyrep/avg_flops': avg['flops'], 'dyrep/blocks': num_blocks}
    if record['eval_change'] is not None:
        scalars['dyrep/eval_change'] = record['eval_change']
    return scalars


__all__ = ['DEGENERATE_RATIO', 'backbone_record', 'degeneracy_warning', 'top_scores', 'update_lines',
           'update_scalars']
