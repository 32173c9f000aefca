# ImageNet training of Sec. 5.1 (the DBB setting the paper follows for ResNets): 120 epochs,
# total batch 256 (8 GPUs x 32), colour-jitter augmentation, SGD (momentum 0.9, weight decay
# 1e-4), cosine learning rate from 0.1. The model comes from the including config.
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs32.py', 'mmpretrain::_base_/default_runtime.py']

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='CosineAnnealingLR', T_max=120, by_epoch=True, begin=0, end=120)
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# the learning rate above is for a total batch of 256 (tools/train.py --auto-scale-lr)
auto_scale_lr = dict(base_batch_size=256)
