"""The random streams of a process as plain data, and the per-sample data streams (pure Python,
NumPy and PyTorch; :mod:`.random_state` is the hook that uses them).

:func:`capture` / :func:`restore` read and set the global streams (Python ``random``, NumPy's global
generator, torch's CPU generator, the CUDA generators) as ints, tuples and tensors that a
``weights_only`` checkpoint holds; inside :func:`forked`, a side job (the DyRep update, a study's grow)
draws from streams seeded for it, and the global streams are as they were after it.
:class:`EpochSeededPipeline` runs a dataset's pipeline on a data stream of its own per process and
epoch; :func:`data_streams_paused` lets a side job (BN calibration) load samples on the caller's
streams without drawing from the training's data stream.
"""
import contextlib
import random
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

#: > 0 while :func:`data_streams_paused` is active in this process
_PAUSED = [0]


@contextlib.contextmanager
def data_streams_paused() -> Iterator[None]:
    """Inside, :class:`EpochSeededPipeline` in this process runs pipelines on the caller's streams
    (e.g. a seeded fork) and leaves the data stream where it was: loading samples for a side job
    (BN calibration) then changes nothing the training draws later. Worker processes are not
    affected (a side job's loader has workers of its own)."""
    _PAUSED[0] += 1
    try:
        yield
    finally:
        _PAUSED[0] -= 1


def capture(cuda: bool = True) -> dict:
    """The global random streams of this process, as plain data: ``python`` (``random.getstate()``),
    ``numpy`` (MT19937 keys as an int64 tensor, position, cached Gaussian), ``torch`` (CPU generator),
    ``cuda`` (one state per local device, where CUDA is initialised and ``cuda``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {'python': random.getstate(),
             'numpy': {'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                       'has_gauss': int(has_gauss), 'gauss': float(gauss)},
             'torch': torch.get_rng_state()}
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict) -> None:
    """Set the global random streams to ``state`` (from :func:`capture`, possibly through a checkpoint
    loaded onto another device)."""
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    npy = state['numpy']
    np.random.set_state(('MT19937', npy['keys'].cpu().numpy().astype(np.uint32), npy['pos'], npy['has_gauss'],
                         npy['gauss']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


def seed_streams(seed: int, cuda: bool = True) -> None:
    """Seed the global streams from ``seed``: Python ``random``, NumPy's global generator (``seed % 2**32``),
    torch's CPU generator and, with ``cuda``, every CUDA generator (``torch.manual_seed``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if cuda:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def forked(seed: int, cuda: bool = True) -> Iterator[None]:
    """Inside, the global streams seeded from ``seed`` (:func:`seed_streams`); after, the streams as they
    were: those of :func:`capture` ``(cuda=False)`` and, with ``cuda``, the CUDA generator of the current
    device (the one a process's work draws from; reading the others would start a CUDA context on each)."""
    outer = capture(cuda=False)
    device = torch.cuda.current_device() if cuda and torch.cuda.is_available() else None
    outer_cuda = torch.cuda.get_rng_state(device) if device is not None else None
    try:
        seed_streams(seed, cuda)
        yield
    finally:
        restore(outer)
        if device is not None:
            torch.cuda.set_rng_state(outer_cuda, device)


def seeded(*key: int) -> dict:
    """The state of Python, NumPy and torch CPU streams seeded from ``key`` (the process's own streams
    are left as they were)."""
    seed = int(np.random.SeedSequence([abs(int(k)) for k in key]).generate_state(1)[0])
    with forked(seed, cuda=False):
        return capture(cuda=False)


class EpochSeededPipeline:
    """A dataset pipeline that runs every sample on its process's data stream: seeded from ``(seed,
    rank, worker, epoch)`` at the process's first sample of each epoch, carried from sample to sample
    within it, and swapped with the process's own streams around each call. ``epoch`` is a
    shared-memory tensor that the main process sets before an epoch's iterator starts, so persistent
    workers see it too. Other attributes are the wrapped pipeline's."""

    def __init__(self, pipeline: Callable, seed: int, rank: int, epoch: Tensor):
        self.pipeline, self.seed, self.rank, self.epoch = pipeline, seed, rank, epoch
        self._key: Optional[Tuple[int, int]] = None
        self._state: Optional[dict] = None

    def __call__(self, results):
        info = torch.utils.data.get_worker_info()
        if _PAUSED[0] and info is None:
            return self.pipeline(results)
        key = (-1 if info is None else info.id, int(self.epoch))
        if key != self._key:
            self._key, self._state = key, seeded(self.seed, self.rank, key[0] + 1, key[1], 0x5EED)
        outer = capture(cuda=False)
        restore(self._state)
        try:
            return self.pipeline(results)
        finally:
            self._state = capture(cuda=False)
            restore(outer)

    def __getattr__(self, name):
        if name == 'pipeline':  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self) -> str:
        return f'EpochSeededPipeline({self.pipeline!r})'


def pipelines_of(dataset) -> List[object]:
    """The datasets reachable from ``dataset`` (through ``.dataset`` / ``.datasets`` of wrappers such
    as ``ConcatDataset`` and ``RepeatDataset``) that hold a callable ``pipeline``."""
    found, todo, seen = [], [dataset], set()
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        if callable(getattr(d, 'pipeline', None)):
            found.append(d)
        todo += [getattr(d, 'dataset', None)] + list(getattr(d, 'datasets', None) or [])
        todo = [t for t in todo if t is not None]
    return found


__all__ = ['EpochSeededPipeline', 'capture', 'data_streams_paused', 'forked', 'pipelines_of', 'restore', 'seed_streams',
           'seeded']
