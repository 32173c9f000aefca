"""random_batch: each toolbox's data format, deterministic, and through the real preprocessors."""
import pytest
import torch

from mmdyrep.datasets.batches import random_batch
from tests.models.builders import build


@pytest.mark.parametrize('toolbox', ['mmdet', 'mmseg', 'mmpretrain'])
def test_random_batch_feeds_the_toolbox_model(toolbox):
    a = random_batch(toolbox, (64, 96), batch_size=2, seed=4, num_boxes=5, min_box=10)
    b = random_batch(toolbox, (64, 96), batch_size=2, seed=4, num_boxes=5, min_box=10)
    assert len(a['inputs']) == len(a['data_samples']) == 2
    assert all(x.shape == (3, 64, 96) and x.dtype == torch.uint8 for x in a['inputs'])
    assert all(torch.equal(x, y) for x, y in zip(a['inputs'], b['inputs']))
    if toolbox == 'mmdet':
        boxes = a['data_samples'][0].gt_instances.bboxes
        assert boxes.shape == (5, 4) and ((boxes[:, 2:] - boxes[:, :2]) >= 10).all()
    model = build(toolbox)
    data = model.data_preprocessor(a, True)
    assert data['inputs'].shape[:2] == (2, 3)
    losses = model(**data, mode='loss')
    assert losses and all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k and torch.is_tensor(v))


def test_unknown_toolbox_is_named():
    with pytest.raises(ValueError, match="unknown toolbox 'mmdet3d'"):
        random_batch('mmdet3d')
