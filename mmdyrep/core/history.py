"""The structure-history format the DyRepHook writes (``dyrep_history.json`` and the ``dyrep`` entry of
its checkpoints) as plain data: its name, version and file name, and the time average of a recorded
value (the paper's "Avg. FLOPs / params"). :mod:`mmdyrep.analysis.history` reads, validates and
summarises such files; pure Python, so both the engine and the analysis use it."""
from typing import Mapping, Sequence

from .branches import DyRepError

FORMAT = 'mmdyrep.history'
VERSION = 1
HISTORY_FILE = 'dyrep_history.json'


class HistoryError(DyRepError):
    """A structure-history file (or the history inside a checkpoint) is missing, corrupt or of another format."""


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


__all__ = ['FORMAT', 'HISTORY_FILE', 'VERSION', 'HistoryError', 'time_average']
