# Tiny ResNet-18 classifier with DyRep on the synthetic ImageNet of mmdyrep.datasets.make_imagenet
# (4 shape classes, 64x64 images): the end-to-end tests (incl. 2-process CPU DDP) and stage C of
# the C+D chain. It trains from scratch on a CPU in well under a minute.
#
# Data root from $MMDYREP_IMAGENET_ROOT (default data/synthetic/imagenet):
#   python tools/misc/make_synthetic_data.py imagenet data/synthetic/imagenet
#   python tools/train.py configs/tiny/imagenet_dyrep_r18_synthetic.py
#
# Differences from configs/imagenet_dyrep_r18.py: 64px images (random crops of 56px), 4 classes,
# batch 8, 3 epochs, a DyRep update every epoch (window ends at epoch 2), 2 calibration batches.
_base_ = ['../imagenet_dyrep_r18.py']

data_root = '{{$MMDYREP_IMAGENET_ROOT:data/synthetic/imagenet}}'
classes = ('square', 'circle', 'triangle', 'star')  # mmdyrep.datasets.IMAGENET_CLASSES
max_epochs = 3

model = dict(
    backbone=dict(zero_init_residual=False),
    head=dict(num_classes=len(classes), topk=(1, )))
data_preprocessor = dict(num_classes=len(classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=56, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=64, edge='short'),
    dict(type='CenterCrop', crop_size=56),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    dataset=dict(data_root=data_root, split='train', metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    dataset=dict(data_root=data_root, split='val', metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=0.005))
param_scheduler = dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs)
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
auto_scale_lr = dict(base_batch_size=8)

custom_hooks = [
    dict(type='DyRepHook', interval=1, begin=0, end=max_epochs - 1, metric='taylor', topk=1, gamma_init=0.01,
         num_calib_batches=2, dep=True, dep_threshold=0.02, flops_input_shape=(3, 56, 56)),
    dict(type='RandomStateHook'),  # exact --resume: the random streams travel in the checkpoints
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=1, max_keep_ckpts=2))
randomness = dict(seed=0)
