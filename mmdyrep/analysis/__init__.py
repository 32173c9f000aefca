"""Analysis of DyRep runs: structure histories (:mod:`.history`) and pictures (:mod:`.plot`, matplotlib);
the benchmarks behind ``tools/analysis/``: training cost on torchvision (:mod:`.benchmark`, PyTorch only)
and on the toolboxes' models (:mod:`.training_cost`), DyRep's overheads (:mod:`.overheads`), with the
timing helpers they share (:mod:`.timing`).

``mmdyrep.analysis.plot`` is imported on demand (it needs matplotlib), the benchmarks too."""
from .history import (HISTORY_FILE, HistoryError, flatten_structure, format_summary, load_history, summary,
                      time_average, training_average, validate_history)

__all__ = [
    'HISTORY_FILE', 'HistoryError', 'flatten_structure', 'format_summary', 'load_history', 'summary', 'time_average',
    'training_average', 'validate_history'
]
