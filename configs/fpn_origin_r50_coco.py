# Faster R-CNN R50-FPN 1x on COCO, baseline without re-parameterization (Table 5, first row).
#
# DyRepResNet with rep_mode='origin' is the stock mmdet ResNet (same modules, keys and outputs);
# it is used here so that every baseline runs through the same code. No DyRepHook.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/mmdet_dyrep.py']

model = dict(backbone=dict(type='DyRepResNet', rep_mode='origin'))
