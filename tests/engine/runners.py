"""Tiny real Runner configs (mmpretrain / mmdet / mmseg on synthetic data) for the hook tests."""

from mmengine.config import Config

from mmdyrep.datasets import make_cityscapes, make_coco, make_imagenet
from tests.models.builders import model_config

HOOK = dict(type='DyRepHook', interval=1, num_calib_batches=2, flops_input_shape=(3, 64, 64))


def imagenet_cfg(data_root, work_dir, *, epochs=3, hook=None, depth=18, optim=None, **extra):
    info = make_imagenet(data_root, num_train_per_class=4, num_val_per_class=2, img_size=48)
    model = model_config('mmpretrain', depth=depth).model
    model.head.in_channels = 512 if depth in (18, 34) else 2048
    model.head.num_classes = len(info['classes'])
    model.head.topk = (1, )
    pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                dict(type='PackInputs')]
    dataset = dict(type='ImageNet', data_root=data_root, split='train', pipeline=pipeline,
                   metainfo=dict(classes=info['classes']))
    cfg = dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmdyrep.models.mmpretrain_resnet', 'mmdyrep.engine'],
                            allow_failed_imports=False),
        model=model,
        work_dir=work_dir,
        train_dataloader=dict(batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
                              dataset=dataset),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper=optim or dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)),
        param_scheduler=[dict(type='CosineAnnealingLR', T_max=epochs, by_epoch=True)],
        custom_hooks=[dict(HOOK, **(hook or {}))],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1), logger=dict(type='LoggerHook',
                                                                                        interval=5)),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0, deterministic=False),
        log_level='INFO',
    )
    cfg.update(extra)
    return Config(cfg)


def _common(work_dir, hook, scope, toolbox):
    return dict(
        default_scope=scope,
        custom_imports=dict(imports=[f'mmdyrep.models.{toolbox}_resnet', 'mmdyrep.engine'],
                            allow_failed_imports=False),
        work_dir=work_dir,
        custom_hooks=[dict(HOOK, **(hook or {}))],
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0),
        log_level='INFO',
    )


def coco_cfg(data_root, work_dir, *, epochs=2, hook=None, **extra):
    info = make_coco(data_root, num_train=8, num_val=4, img_size=(160, 128))
    model = model_config('mmdet').model
    model.roi_head.bbox_head.num_classes = len(info['classes'])
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                dict(type='Resize', scale=(128, 96), keep_ratio=True), dict(type='PackDetInputs')]
    dataset = dict(type='CocoDataset', data_root=data_root, ann_file=info['train_ann_file'],
                   data_prefix=dict(img=info['train_img_prefix']), metainfo=dict(classes=info['classes']),
                   filter_cfg=dict(filter_empty_gt=True), pipeline=pipeline)
    cfg = _common(work_dir, hook, 'mmdet', 'mmdet')
    cfg.update(
        model=model,
        train_dataloader=dict(batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_sampler=dict(type='AspectRatioBatchSampler'), dataset=dataset),
        train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.005, momentum=0.9, weight_decay=1e-4)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
    )
    cfg.update(extra)
    return Config(cfg)


def cityscapes_cfg(data_root, work_dir, *, iters=4, hook=None, **extra):
    make_cityscapes(data_root, num_train=4, num_val=2, img_size=(128, 64))
    model = model_config('mmseg').model
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
    dataset = dict(type='CityscapesDataset', data_root=data_root,
                   data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'), pipeline=pipeline)
    cfg = _common(work_dir, dict(dict(interval=2), **(hook or {})), 'mmseg', 'mmseg')
    cfg.update(
        model=model,
        train_dataloader=dict(batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
                              dataset=dataset),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2)),
    )
    cfg.update(extra)
    return Config(cfg)
