# PSPNet R50-d8, Cityscapes 512x1024, 40k iterations, DyRep in both stages: Table 5, "DyRep, C+D".
#
# Stage C: a DyRep ResNet-50 trained on ImageNet by configs/imagenet_dyrep_r50.py (mmpretrain's
# ResNet-50, 7x7 stem). Its keys and structure fit mmseg's ResNet (not ResNetV1c, whose deep stem
# has other modules), so this config uses DyRepResNet with PSPNet's d8 dilations and strides
# (contract_dilation as in the stock config) and drops the V1c pretrained weights. DyRep then
# evolves the backbone further, as in configs/pspnet_dyrep_r50-d8_cityscapes.py.
#
# Point it to your ImageNet checkpoint (evolved as the Runner saved it, or deployed by
# tools/deploy.py; for a backbone-only state dict also set model.backbone.init_cfg.prefix=None):
#
#   bash tools/dist_train.sh configs/pspnet_dyrep_r50-d8_cityscapes_cd.py 4 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/imagenet_dyrep_r50/epoch_120.pth
_base_ = './pspnet_dyrep_r50-d8_cityscapes.py'

model = dict(
    pretrained=None,
    backbone=dict(
        type='DyRepResNet',
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/imagenet_dyrep_r50/epoch_120.pth',
                      prefix='backbone.')))
