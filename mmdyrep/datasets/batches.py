"""Random in-memory batches in each toolbox's own data format (for benchmarks and tests).

:func:`random_batch` returns ``dict(inputs=[uint8 CHW images], data_samples=[...])`` as a
toolbox's data loader would hand it to ``model.data_preprocessor``: mmdet ``DetDataSample``
with boxes and labels, mmseg ``SegDataSample`` with a label map, mmpretrain ``DataSample`` with
a class label. Deterministic given ``seed``. The toolbox is imported only when asked for.
"""
from typing import Sequence

import torch

TOOLBOXES = ('mmdet', 'mmseg', 'mmpretrain')


def random_batch(toolbox: str, size: Sequence[int] = (96, 128), batch_size: int = 2, seed: int = 0,
                 num_boxes: int = 3, min_box: float = 8) -> dict:
    """``batch_size`` random images of ``size`` (H, W) with random targets: ``num_boxes`` boxes of
    at least ``min_box`` pixels (80 COCO classes), a 19-class label map, or one of 1000 classes."""
    if toolbox not in TOOLBOXES:
        raise ValueError(f"unknown toolbox '{toolbox}' (choose from {', '.join(TOOLBOXES)})")
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for _ in range(batch_size)]
    samples = []
    if toolbox == 'mmdet':
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        for _ in range(batch_size):
            s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                            scale_factor=(1.0, 1.0), batch_input_shape=(h, w)))
            xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w / 2, h / 2])
            wh = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w / 2, h / 2]) + min_box
            s.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                          labels=torch.randint(0, 80, (num_boxes, ), generator=g))
            samples.append(s)
    elif toolbox == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        for _ in range(batch_size):
            s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
            s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, h, w), generator=g))
            samples.append(s)
    else:
        from mmpretrain.structures import DataSample
        samples = [DataSample().set_gt_label(int(torch.randint(0, 1000, (1, ), generator=g)))
                   for _ in range(batch_size)]
    return dict(inputs=inputs, data_samples=samples)


__all__ = ['random_batch']
