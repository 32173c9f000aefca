# DyRep for mmpretrain configs: registers DyRepResNet* in mmpretrain's MODELS and DyRepHook (+ the
# CPU DDP wrapper and the safe globals that --resume needs) in mmengine's registries.
custom_imports = dict(imports=['mmdyrep.models.mmpretrain_resnet', 'mmdyrep.engine'],
                      allow_failed_imports=False)
