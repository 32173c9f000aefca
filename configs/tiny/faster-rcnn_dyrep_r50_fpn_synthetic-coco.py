# Tiny Faster R-CNN R50-FPN with DyRep on the synthetic COCO of mmdyrep.datasets.make_coco
# (coloured shapes, 3 classes): the quick start (tools/quickstart.py) and the end-to-end tests.
# It trains from scratch on a CPU in a few minutes (no pretrained weights can be downloaded here).
#
# Data: generate it, then train (data root from $MMDYREP_COCO_ROOT, default data/synthetic/coco):
#   python tools/misc/make_synthetic_data.py coco data/synthetic/coco
#   python tools/train.py configs/tiny/faster-rcnn_dyrep_r50_fpn_synthetic-coco.py
# Another place: MMDYREP_COCO_ROOT=/path/to/coco python tools/train.py ...
#
# Differences from configs/fpn_dyrep_r50_coco.py: small images (320x256), 3 classes, no
# pretrained backbone (init_cfg=None) and so trainable BNs in every stage (norm_eval=False,
# frozen_stages=-1), a short schedule, a DyRep update every epoch with 4 calibration batches.
_base_ = ['../fpn_dyrep_r50_coco.py']

data_root = '{{$MMDYREP_COCO_ROOT:data/synthetic/coco}}/'
classes = ('square', 'circle', 'triangle')  # mmdyrep.datasets.COCO_CLASSES
img_scale = (320, 256)
max_epochs = 3

model = dict(
    backbone=dict(init_cfg=None, norm_eval=False),
    roi_head=dict(bbox_head=dict(num_classes=len(classes))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[max_epochs - 1], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.01), clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=2)

custom_hooks = [
    dict(type='DyRepHook', interval=1, begin=0, end=max_epochs - 1, metric='taylor', topk=1, gamma_init=0.01,
         num_calib_batches=4, dep=True, dep_threshold=0.02, flops_input_shape=(3, 256, 320)),
    dict(type='RandomStateHook'),  # exact --resume: the random streams travel in the checkpoints
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=1, max_keep_ckpts=2))
log_processor = dict(window_size=5)
randomness = dict(seed=0)
