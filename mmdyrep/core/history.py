"""The structure-history format the DyRepHook writes (``dyrep_history.json`` and the ``dyrep`` entry of
its checkpoints) as plain data: its name, version and file name, one record and the whole document
(:func:`make_record`, :func:`make_history`), the atomic write of the file (:func:`write_history`), and
the time average of a recorded value (the paper's "Avg. FLOPs / params").
:mod:`mmdyrep.analysis.history` reads, validates and summarises such files; pure Python, so both the
engine and the analysis use it."""
import json
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from .branches import DyRepError

FORMAT = 'mmdyrep.history'
VERSION = 1
HISTORY_FILE = 'dyrep_history.json'


class HistoryError(DyRepError):
    """A structure-history file (or the history inside a checkpoint) is missing, corrupt or of another format."""


def make_record(it: int, epoch: int, grown: Mapping[str, List[str]], cut: Mapping[str, List[str]],
                cost: Mapping[str, int], deployed: Mapping[str, int], structure: dict,
                importances: Dict[str, Dict[str, float]], eval_change: Optional[float] = None) -> dict:
    """One record: the state right after the update at iteration ``it`` (or the start of training).

    ``cost`` and ``deployed`` hold ``params`` and ``flops`` of the backbone now and deployed;
    ``structure`` is ``extract_structure(backbone)``, ``importances`` ``{block: {branch: s}}``."""
    return {
        'iter': int(it), 'epoch': int(epoch),
        'grown': grown, 'cut': cut,
        'params': cost['params'], 'flops': cost['flops'],
        'deployed_params': deployed['params'], 'deployed_flops': deployed['flops'],
        'eval_change': eval_change,
        'structure': structure,
        'importances': importances,
    }


def make_history(records: List[dict], by_epoch: bool, max_iters: int, max_epochs: Optional[int],
                 input_shape: Optional[Sequence[int]]) -> dict:
    """The history document around ``records`` (``max_epochs``: ``None`` for an iteration-based run;
    ``input_shape``: ``None`` where it is not known)."""
    return {'format': FORMAT, 'version': VERSION, 'by_epoch': by_epoch, 'max_iters': max_iters,
            'max_epochs': max_epochs, 'input_shape': list(input_shape) if input_shape is not None else None,
            'records': records}


def write_history(path: str, history: Mapping, before_replace: Optional[Callable[[], None]] = None) -> None:
    """Write ``history`` to ``path`` as JSON atomically (a reader never sees a half-written file; a
    process killed while writing leaves the previous file). ``before_replace`` is called between the
    temporary file and the replace (tests kill the process there)."""
    with open(path + '.tmp', 'w') as f:
        json.dump(history, f)
    if before_replace is not None:
        before_replace()
    os.replace(path + '.tmp', path)


def time_average(records: Sequence[Mapping], key: str, end: int, start: int = 0) -> float:
    """Time-weighted average of a piecewise-constant value over iterations ``[start, end]``.

    Record ``i`` (sorted by ``'iter'``) holds ``records[i][key]`` from its ``iter`` until the next
    record's; the first record's value also holds before it (it is the start state). With
    ``end <= start`` the value at ``start`` is returned."""
    if not records:
        raise HistoryError(f'no records to average {key!r} over')
    if end <= start:
        value = records[0][key]
        for rec in records:
            if rec['iter'] <= start:
                value = rec[key]
        return float(value)
    total = 0.0
    for i, rec in enumerate(records):
        begin = start if i == 0 else max(rec['iter'], start)
        until = records[i + 1]['iter'] if i + 1 < len(records) else end
        until = min(until, end)
        if until > begin:
            total += float(rec[key]) * (until - begin)
    return total / (end - start)


__all__ = ['FORMAT', 'HISTORY_FILE', 'VERSION', 'HistoryError', 'make_history', 'make_record', 'time_average',
           'write_history']
