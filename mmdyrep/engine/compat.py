"""Make mmengine 0.10.7 checkpoints load under torch >= 2.6 (``weights_only=True``) for resume.

mmengine calls ``torch.load`` without ``weights_only``; torch 2.6+ then refuses the classes a
runner checkpoint holds (``HistoryBuffer`` in the message hub, numpy arrays and scalars).
Instead of loading arbitrary pickles we allow-list exactly those classes.
"""
import numpy as np
import torch


def _numpy_globals() -> list:
    core = getattr(np, '_core', None) or np.core
    found = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    found += [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32', 'int8', 'uint8',
                                          'bool')]
    return found


def _history_buffer_getattr():
    """``getattr`` as pickle uses it for ``HistoryBuffer.min`` & co (protocol 4 pickles methods
    as ``getattr(cls, name)``), restricted to exactly that: anything else is refused."""
    from mmengine.logging import HistoryBuffer

    def restricted_getattr(obj, name, *default):
        if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
            return getattr(obj, name)
        raise RuntimeError(f'checkpoint asks for getattr({obj!r}, {name!r}): refused (not an mmengine '
                           'HistoryBuffer statistics method)')

    return restricted_getattr


def allow_mmengine_checkpoints() -> list:
    """Allow-list the classes of an mmengine runner checkpoint for ``torch.load`` (idempotent)."""
    from mmengine.logging import HistoryBuffer
    safe = [HistoryBuffer] + _numpy_globals()
    torch.serialization.add_safe_globals(safe + [(_history_buffer_getattr(), 'builtins.getattr')])
    return safe
