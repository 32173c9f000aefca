"""Make mmengine 0.10.7 checkpoints load under torch >= 2.6 (``weights_only=True``) for resume.

mmengine calls ``torch.load`` without ``weights_only``; torch 2.6+ then refuses the classes a
runner checkpoint holds (``HistoryBuffer`` in the message hub, numpy arrays and scalars).
Instead of loading arbitrary pickles we allow-list exactly those classes.
"""
import os.path as osp

import numpy as np
import torch

from mmdyrep.core import DyRepError


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


class CheckpointError(DyRepError):
    """A checkpoint file is missing, unreadable, or holds more than tensors and plain data."""


def load_error(e: Exception) -> str:
    """The useful part of a ``torch.load`` error (not the advice to retry with ``weights_only=False``)."""
    text = str(e).strip()
    if 'Weights only load failed' in text:
        detail = text.split('WeightsUnpickler error:', 1)[-1] if 'WeightsUnpickler error:' in text else ''
        detail = ' '.join(line.strip() for line in detail.split('Check the documentation')[0].splitlines()
                          if line.strip())
        return (f'torch.load(weights_only=True) refused the checkpoint ({detail or "unsupported content"}). '
                'mmdyrep does not unpickle arbitrary objects; re-save the state dict with plain tensors, e.g. '
                "torch.save({'state_dict': model.state_dict()}, file)")
    first = text.splitlines()[0] if text else ''
    return f'not a readable PyTorch checkpoint ({type(e).__name__}: {first[:300]})'


def read_checkpoint(path: str) -> dict:
    """A checkpoint as ``torch.load(path, weights_only=True)`` reads it, with an mmengine runner
    checkpoint's classes allow-listed (:func:`allow_mmengine_checkpoints`): tensors and plain data
    only. A missing, corrupt or truncated file, or one holding other objects or no dict, raises
    :class:`CheckpointError` saying which."""
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    allow_mmengine_checkpoints()
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle, zip and weights_only errors)
        raise CheckpointError(f'cannot read checkpoint {path}: {load_error(e)}') from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path} is not a checkpoint: it holds a {type(ckpt).__name__}, not a dict')
    return ckpt
