# ResNet-50 on ImageNet with static RepVGG-style branches: every K×K conv gets a 1x1 branch and,
# where the shapes allow it, a residual (BN) branch for the whole training. Same schedule as
# DyRep, no hook. Deploy with tools/deploy.py to a plain mmpretrain ResNet-50.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py', './_base_/imagenet_bs256_120e.py', './_base_/mmpretrain_dyrep.py'
]

model = dict(backbone=dict(type='DyRepResNet', rep_mode='repvgg'))
