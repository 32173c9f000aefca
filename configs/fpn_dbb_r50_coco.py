# Faster R-CNN R50-FPN 1x on COCO with a static Diverse Branch Block backbone (DBB baseline).
#
# rep_mode='dbb': every K×K conv outside the frozen stages gets the DBB branches (1x1-KxK,
# 1x1-AVG, 1x1) from the start; the torchvision ResNet-50 weights load into the K×K convs and the
# branches are grown around them (output unchanged). No DyRepHook. Deploy with tools/deploy.py.
# (Table 5's "DBB, stage C" row is the plain detector, configs/fpn_origin_r50_coco.py, with the
# backbone initialised from a deployed configs/imagenet_dbb_r50.py checkpoint.)
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/mmdet_dyrep.py']

# fast_forward: each block runs as one K×K conv (norm_eval=True; exact, docs/benchmarks.md).
model = dict(backbone=dict(type='DyRepResNet', rep_mode='dbb', fast_forward=True))
