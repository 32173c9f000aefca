# PSPNet R50-d8, Cityscapes 512x1024, 40k iterations, with static Diverse Branch Blocks (DBB):
# every K×K conv of the backbone (stem included) gets the 1x1-KxK, 1x1-AVG and 1x1 branches from
# the start, grown around the loaded ImageNet weights. No DyRepHook. Deploy with tools/deploy.py.
_base_ = ['mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py', './_base_/mmseg_dyrep.py']

model = dict(backbone=dict(type='DyRepResNetV1c', rep_mode='dbb'))
