"""mmdyrep.engine.random_state: the random streams captured and restored exactly (also through a
``weights_only`` checkpoint), and the per-sample data streams independent of the main streams, of
the process history and of worker persistence."""
import io
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import mmdyrep.engine  # noqa: F401  (allow-lists mmengine's checkpoint classes)
from mmdyrep.engine.streams import EpochSeededPipeline, capture, forked, pipelines_of, restore, seed_streams, seeded


def draws():
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_capture_restore_through_a_weights_only_checkpoint():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    state = capture()
    expected = draws()
    buffer = io.BytesIO()
    torch.save({'random_state': state}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)['random_state']  # no allow-list needed
    draws(), draws()
    restore(loaded)
    assert draws() == expected


def test_arbitrary_pickles_are_still_refused():
    buffer = io.BytesIO()
    torch.save({'random_state': capture(), 'evil': print}, buffer)
    buffer.seek(0)
    with pytest.raises(Exception, match='Unsupported global'):
        torch.load(buffer, weights_only=True)


def test_forked_is_seeded_and_leaves_the_training_streams_alone():
    torch.manual_seed(0)
    np.random.randn()  # a cached Gaussian too
    before = capture()
    with forked(7):
        first = draws()
    after = capture()
    assert torch.equal(after['torch'], before['torch']) and after['python'] == before['python']
    assert after['numpy']['gauss'] == before['numpy']['gauss'] and torch.equal(after['numpy']['keys'],
                                                                                 before['numpy']['keys'])
    with forked(7):
        assert draws() == first
    seed_streams(7)
    assert draws() == first  # the same seeding as the fork's
    restore(before)
    expected = draws()
    restore(before)
    with pytest.raises(ValueError), forked(8, cuda=False):
        draws()
        raise ValueError('a failing side job')
    assert draws() == expected  # set back on the way out of a failure too


def test_seeded_leaves_the_process_streams_alone():
    torch.manual_seed(0)
    before = capture()
    a, b = seeded(1, 2, 3), seeded(1, 2, 3)
    assert torch.equal(a['torch'], b['torch']) and a['python'] == b['python']
    assert not torch.equal(seeded(1, 2, 4)['torch'], a['torch'])
    after = capture()
    assert torch.equal(before['torch'], after['torch']) and before['python'] == after['python']


class _Draw:
    """A pipeline transform that draws from every stream."""

    def __call__(self, results):
        return dict(results, draws=draws())


class _Data(Dataset):
    def __init__(self, pipeline):
        self.pipeline = pipeline

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.pipeline({'i': i})


def test_a_sample_draws_from_the_data_stream_only():
    epoch = torch.zeros((), dtype=torch.int64)
    pipe = EpochSeededPipeline(_Draw(), seed=0, rank=0, epoch=epoch)
    torch.manual_seed(5)
    main = capture()
    first = [pipe({'i': i})['draws'] for i in range(3)]
    assert torch.equal(capture()['torch'], main['torch'])  # the main streams did not move
    fresh = EpochSeededPipeline(_Draw(), seed=0, rank=0, epoch=epoch)
    torch.manual_seed(123)  # another main state: the same samples
    assert [fresh({'i': i})['draws'] for i in range(3)] == first
    epoch.fill_(1)
    assert pipe({'i': 0})['draws'] != first[0]  # a new epoch reseeds
    assert EpochSeededPipeline(_Draw(), seed=0, rank=1, epoch=epoch)({'i': 0})['draws'] != pipe({'i': 0})['draws']


@pytest.mark.parametrize('persistent', [True, False])
def test_workers_draw_per_epoch_whatever_ran_before(persistent):
    """Epoch 1 of a loader whose workers already ran epoch 0 draws what fresh workers draw for epoch 1:
    so a run resumed at epoch 1 gets the augmentation the uninterrupted run got."""
    def loader(epoch):
        data = _Data(EpochSeededPipeline(_Draw(), seed=3, rank=0, epoch=epoch))
        return DataLoader(data, batch_size=2, num_workers=2, persistent_workers=persistent,
                          collate_fn=lambda batch: [s['draws'] for s in batch])

    epoch = torch.zeros((), dtype=torch.int64).share_memory_()
    long_run = loader(epoch)
    epoch_0 = list(long_run)
    epoch.fill_(1)
    epoch_1 = list(long_run)
    resumed_epoch = torch.ones((), dtype=torch.int64).share_memory_()
    assert list(loader(resumed_epoch)) == epoch_1
    assert epoch_1 != epoch_0


def test_pipelines_are_found_through_dataset_wrappers():
    from torch.utils.data import ConcatDataset
    a, b = _Data(_Draw()), _Data(_Draw())
    assert {id(d) for d in pipelines_of(ConcatDataset([a, b]))} == {id(a), id(b)}
