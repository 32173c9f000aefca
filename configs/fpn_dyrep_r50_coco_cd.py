# Faster R-CNN R50-FPN 1x on COCO, DyRep in both stages: Table 5, "DyRep, stage C+D".
#
# Stage C: train a DyRep ResNet-50 on ImageNet (configs/imagenet_dyrep_r50.py). Stage D (this
# config): the detector's backbone starts from that checkpoint and DyRep evolves it further
# (same hook as configs/fpn_dyrep_r50_coco.py).
#
# Point the backbone to your ImageNet checkpoint (the default path below is where
# `python tools/train.py configs/imagenet_dyrep_r50.py` leaves its last epoch):
#
#   python tools/train.py configs/fpn_dyrep_r50_coco_cd.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/imagenet_dyrep_r50/epoch_120.pth
#
# The checkpoint may be
#   * the evolved checkpoint as the Runner saved it: the backbone starts with the structure
#     evolved on ImageNet (its `backbone.dyrep_structure` entry is rebuilt on load);
#   * a deployed checkpoint of the whole classifier (tools/deploy.py): a plain ResNet-50;
#   * a backbone-only state dict (keys without `backbone.`): also set
#     model.backbone.init_cfg.prefix=None.
# `prefix='backbone.'` takes the classifier's backbone weights and drops its head.
_base_ = './fpn_dyrep_r50_coco.py'

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/imagenet_dyrep_r50/epoch_120.pth',
                      prefix='backbone.')))
