"""OpenMMLab adapters: DyRepResNet for mmdet, mmseg and mmpretrain.

Import ``mmdyrep.models.mmdet_resnet`` (or ``mmseg_resnet``, ``mmpretrain_resnet``) to
register the backbones in that toolbox, or call :func:`register`.
"""
from .complexity import complexity
from .dyrep_resnet import (REP_MODES, STATIC_BRANCHES, STRUCTURE_KEY, DyRepResNetMixin, decode_structure,
                           deploy_state_dict, encode_structure, switch_to_deploy)
from .toolboxes import register

__all__ = [
    'DyRepResNetMixin', 'REP_MODES', 'STATIC_BRANCHES', 'STRUCTURE_KEY', 'complexity', 'decode_structure',
    'deploy_state_dict', 'encode_structure', 'register', 'switch_to_deploy'
]
