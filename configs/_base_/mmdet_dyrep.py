# DyRep for mmdet configs: registers DyRepResNet* in mmdet's MODELS and DyRepHook (+ the CPU DDP
# wrapper and the safe globals that --resume needs) in mmengine's registries.
custom_imports = dict(imports=['mmdyrep.models.mmdet_resnet', 'mmdyrep.engine'], allow_failed_imports=False)
