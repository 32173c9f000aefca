# Tiny ResNet-50 classifier with DyRep on the synthetic ImageNet: stage C of the tiny C+D chain
# (its checkpoint initialises configs/tiny/faster-rcnn_dyrep_r50_fpn_synthetic-coco_cd.py).
# Everything else as configs/tiny/imagenet_dyrep_r18_synthetic.py.
#
#   python tools/train.py configs/tiny/imagenet_dyrep_r50_synthetic.py
_base_ = ['./imagenet_dyrep_r18_synthetic.py']

model = dict(backbone=dict(depth=50), head=dict(in_channels=2048))
