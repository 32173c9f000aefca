# Faster R-CNN R50-FPN 1x on COCO with DyRep in the downstream task: Table 5, "DyRep, stage D".
#
# The backbone starts from the plain torchvision ResNet-50 (the stock mmdet init) and DyRep
# evolves it while the detector trains: every epoch (interval=1) the conv with the largest
# saliency (the Taylor score of the conv with its BN) grows new branches (Rep) and weak branches
# are cut (Dep). Growth stops after epoch 10 of 12 (end=10), as the paper stops DyRep before the
# end of training (ImageNet: epoch 100 of 120), so the last epochs (after the first LR step at
# epoch 8) train a fixed structure.
# mmdet's ResNet settings stay: frozen_stages=1 (stem and layer1 never grow) and norm_eval=True
# (the new branches' BNs keep the statistics their calibration set).
#
#   python tools/train.py configs/fpn_dyrep_r50_coco.py
#   bash tools/dist_train.sh configs/fpn_dyrep_r50_coco.py 8
#   python tools/deploy.py configs/fpn_dyrep_r50_coco.py work_dirs/fpn_dyrep_r50_coco/epoch_12.pth fpn_r50.pth
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/mmdet_dyrep.py']

# fast_forward: with norm_eval=True every block runs as ONE K×K conv built from its branches at
# each step (mmdyrep.core.fast_block; same outputs and gradients, see docs/benchmarks.md).
model = dict(backbone=dict(type='DyRepResNet', rep_mode='dyrep', fast_forward=True))

custom_hooks = [
    dict(type='DyRepHook', interval=1, begin=0, end=10, metric='taylor', topk=1, gamma_init=0.01,
         num_calib_batches=20, dep=True, dep_threshold=0.02),
    dict(type='RandomStateHook'),  # exact --resume: the random streams travel in the checkpoints
]
