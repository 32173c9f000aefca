# ResNet-50 on ImageNet without re-parameterization (Table 3, "Origin"), same schedule as DyRep.
# DyRepResNet with rep_mode='origin' is mmpretrain's ResNet (same modules, keys and outputs).
_base_ = [
    'mmpretrain::_base_/models/resnet50.py', './_base_/imagenet_bs256_120e.py', './_base_/mmpretrain_dyrep.py'
]

model = dict(backbone=dict(type='DyRepResNet', rep_mode='origin'))
