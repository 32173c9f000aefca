# ResNet-18 on ImageNet with static Diverse Branch Blocks (Table 3, "DBB"): every K×K conv gets
# the 1x1-KxK, 1x1-AVG and 1x1 branches for the whole training. Same schedule as DyRep, no hook.
# Deploy with tools/deploy.py to a plain mmpretrain ResNet-18.
_base_ = [
    'mmpretrain::_base_/models/resnet18.py', './_base_/imagenet_bs256_120e.py', './_base_/mmpretrain_dyrep.py'
]

# fast_forward: exact, cheaper forward of the blocks (a grown 7x7 stem's 1x1-AVG branch pools its
# 3 input channels first; see docs/benchmarks.md).
model = dict(backbone=dict(type='DyRepResNet', rep_mode='dbb', fast_forward=True))
