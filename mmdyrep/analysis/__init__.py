"""Analysis of DyRep runs and the libraries behind ``tools/analysis/``, by the question each answers:

* what did a run's structure do? :mod:`.history` (load, check, average a structure history) and
  :mod:`.plot` (pictures, matplotlib);
* which saliency metric sees the loss? :mod:`.saliency` (plain-data comparisons) and
  :mod:`.saliency_study` (on a config's real model and data);
* what does training cost on the toolboxes' models? :mod:`.training_cost` (paper Tables 2-3 "Cost")
  and :mod:`.overheads` (scoring, updates, deploy);
* what does it cost on any GPU machine with PyTorch only? :mod:`.benchmark` (torchvision ResNets:
  time, memory, counts), :mod:`.device_checks` (the core's exactness on a device), :mod:`.kernels`
  (one block's kernels, time and host time) and :mod:`.one_conv` (issue 12's one-conv merge, to measure);
* what would a step cost where it was not timed? :mod:`.ops` (ops, bytes, saved bytes, hidden kernels,
  multiply-adds, counted on ``meta``) and :mod:`.roofline` (a step-time model fit to measured ratios);
* shared: :mod:`.timing` (synchronised timing, the host's share, the machine's description).

``mmdyrep.analysis.plot`` is imported on demand (it needs matplotlib), the benchmarks too."""
from .history import (HISTORY_FILE, HistoryError, flatten_structure, format_summary, load_history, summary,
                      time_average, training_average, validate_history)

__all__ = [
    'HISTORY_FILE', 'HistoryError', 'flatten_structure', 'format_summary', 'load_history', 'summary', 'time_average',
    'training_average', 'validate_history'
]
