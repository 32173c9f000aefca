# PSPNet R50-d8, Cityscapes 512x1024, 40k iterations: baseline without re-parameterization.
# DyRepResNetV1c with rep_mode='origin' is mmseg's ResNetV1c (same modules, keys and outputs).
_base_ = ['mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py', './_base_/mmseg_dyrep.py']

model = dict(backbone=dict(type='DyRepResNetV1c', rep_mode='origin'))
