# Tiny PSPNet R18-d8 with DyRep on the synthetic Cityscapes of mmdyrep.datasets.make_cityscapes
# (cartoon street scenes, 512x256): the end-to-end tests. It trains from scratch on a CPU in a
# minute or so; iteration based, so the DyRep interval is in iterations.
#
# Data root from $MMDYREP_CITYSCAPES_ROOT (default data/synthetic/cityscapes):
#   python tools/misc/make_synthetic_data.py cityscapes data/synthetic/cityscapes
#   python tools/train.py configs/tiny/pspnet_dyrep_r18-d8_synthetic-cityscapes.py
#
# Differences from configs/pspnet_dyrep_r50-d8_cityscapes.py: ResNetV1c-18 (mmseg's
# pspnet_r18-d8 head widths), no pretrained weights, BN instead of SyncBN, 256x256 crops of
# 512x256 images, 8 iterations with a DyRep update every 3 (the last at 6), 2 calibration batches.
_base_ = ['../pspnet_dyrep_r50-d8_cityscapes.py']

data_root = '{{$MMDYREP_CITYSCAPES_ROOT:data/synthetic/cityscapes}}/'
crop_size = (256, 256)
img_scale = (512, 256)
max_iters = 8
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(depth=18, norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(in_channels=512, channels=128, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=64, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)

custom_hooks = [
    dict(type='DyRepHook', interval=3, begin=0, end=6, metric='taylor', topk=1, gamma_init=0.01,
         num_calib_batches=2, dep=True, dep_threshold=0.02, flops_input_shape=(3, 256, 256)),
    dict(type='RandomStateHook'),  # exact --resume: the random streams travel in the checkpoints
]
default_hooks = dict(
    logger=dict(interval=2, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=4, max_keep_ckpts=2))
randomness = dict(seed=0)
