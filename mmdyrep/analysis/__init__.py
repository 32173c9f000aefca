"""Analysis of DyRep runs: structure histories (:mod:`.history`) and pictures (:mod:`.plot`, matplotlib).

``mmdyrep.analysis.plot`` is imported on demand (it needs matplotlib)."""
from .history import (HISTORY_FILE, HistoryError, flatten_structure, format_summary, load_history, summary,
                      time_average, training_average, validate_history)

__all__ = [
    'HISTORY_FILE', 'HistoryError', 'flatten_structure', 'format_summary', 'load_history', 'summary', 'time_average',
    'training_average', 'validate_history'
]
