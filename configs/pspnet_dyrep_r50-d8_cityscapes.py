# PSPNet R50-d8, Cityscapes 512x1024, 40k iterations, with DyRep in the downstream task:
# Table 5, "DyRep, stage D".
#
# The backbone is mmseg's ResNetV1c-50 (deep stem, dilations 1/1/2/4) starting from the stock
# ImageNet weights (open-mmlab://resnet50_v1c). The train loop is iteration based, so the hook's
# interval/end are iterations: an update (Rep + Dep) every 4000 iterations, the last one at
# 36000 of 40000 (growth stops before the end, as in the paper). mmseg's SyncBN stays (the new
# branches' BNs are SyncBN too); on a CPU machine tools/train.py runs them as BN.
#
#   bash tools/dist_train.sh configs/pspnet_dyrep_r50-d8_cityscapes.py 4
_base_ = ['mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py', './_base_/mmseg_dyrep.py']

model = dict(backbone=dict(type='DyRepResNetV1c', rep_mode='dyrep'))

custom_hooks = [
    dict(type='DyRepHook', interval=4000, begin=0, end=36000, metric='taylor', topk=1, gamma_init=0.01,
         num_calib_batches=20, dep=True, dep_threshold=0.02),
    dict(type='RandomStateHook'),  # exact --resume: the random streams travel in the checkpoints
]
