# Faster R-CNN R50-FPN 1x on COCO with static RepVGG-style branches (K×K + 1×1 + residual BN).
#
# rep_mode='repvgg': every K×K conv outside the frozen stages gets a 1x1 branch and, where the
# shapes allow it (in = out channels, stride 1), a residual (BN) branch from the start; the
# torchvision ResNet-50 weights load into the K×K convs. No DyRepHook. Deploy with tools/deploy.py.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', './_base_/mmdet_dyrep.py']

# fast_forward: each block runs as one K×K conv (norm_eval=True; exact, docs/benchmarks.md).
model = dict(backbone=dict(type='DyRepResNet', rep_mode='repvgg', fast_forward=True))
