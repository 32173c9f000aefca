# Tiny Faster R-CNN R50-FPN, DyRep stage C+D (Table 5): the backbone starts from the evolved
# checkpoint of the tiny ImageNet run (configs/tiny/imagenet_dyrep_r50_synthetic.py), structure
# included, and DyRep evolves it further on the synthetic COCO.
#
#   python tools/train.py configs/tiny/imagenet_dyrep_r50_synthetic.py
#   python tools/train.py configs/tiny/faster-rcnn_dyrep_r50_fpn_synthetic-coco_cd.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/imagenet_dyrep_r50_synthetic/epoch_3.pth
# (or set $MMDYREP_CD_CHECKPOINT). The checkpoint may also be a deployed one (tools/deploy.py).
_base_ = ['./faster-rcnn_dyrep_r50_fpn_synthetic-coco.py']

model = dict(
    backbone=dict(
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint='{{$MMDYREP_CD_CHECKPOINT:work_dirs/imagenet_dyrep_r50_synthetic/epoch_3.pth}}',
                      prefix='backbone.')))
