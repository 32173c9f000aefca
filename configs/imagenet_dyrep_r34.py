# ResNet-34 on ImageNet with DyRep (Table 3): plain ResNet-34 at the start, evolved every 5 epochs
# until epoch 100 of 120; deploy with tools/deploy.py to a plain mmpretrain ResNet-34.
#
#   bash tools/dist_train.sh configs/imagenet_dyrep_r34.py 8
_base_ = [
    'mmpretrain::_base_/models/resnet34.py', './_base_/imagenet_bs256_120e.py', './_base_/mmpretrain_dyrep.py',
    './_base_/imagenet_dyrep_hook.py'
]

# fast_forward: exact, cheaper forward of the blocks (a grown 7x7 stem's 1x1-AVG branch pools its
# 3 input channels first; see docs/benchmarks.md).
model = dict(backbone=dict(type='DyRepResNet', rep_mode='dyrep', fast_forward=True))
