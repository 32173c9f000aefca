"""The DyRep core in plain PyTorch (no OpenMMLab imports).

Typical use::

    from mmdyrep.core import grow, cut, deploy, growable_convs

    names = list(growable_convs(model))           # K×K convs that can grow
    grow(model, ['layer1.0.conv1'], calibrate=lambda m: [m(x) for x in batches])
    cut(model, threshold=0.02)                    # Dep (Sec. 4.2)
    deploy(model)                                 # back to plain convs

Rep, Dep and deploy keep the eval-mode output of the model (float rounding aside).
"""
from .block import (DyRepBlock, calibration_mode, cut, cut_branches, dep_decision, grow, growable_convs,
                    iter_blocks, set_fast_forward)
from .branches import BRANCH_TYPES, Branch, ConvSpec, DyRepError, UnsupportedConvError, build_branch
from .deploy import deploy, fold_conv_bias
from .transforms import full_fp32, relative_error
from .evolver import Evolver
from .norms import KINDS, candidate_kind, example_input, following_norms
from .saliency import (DEFAULT_METRIC, METRICS, SaliencyAccumulator, grad_norm, grasp, hessian_gradient_product,
                       snip, synflow, synflow_conv, taylor)
from .structure import apply_structure, extract_structure, is_evolved, strip_blocks

__all__ = [
    'BRANCH_TYPES', 'DEFAULT_METRIC', 'KINDS', 'METRICS', 'Branch', 'ConvSpec', 'DyRepBlock', 'DyRepError', 'Evolver',
    'SaliencyAccumulator', 'UnsupportedConvError', 'apply_structure', 'build_branch', 'calibration_mode',
    'candidate_kind', 'cut', 'cut_branches', 'dep_decision', 'deploy', 'example_input', 'extract_structure',
    'fold_conv_bias', 'following_norms', 'full_fp32', 'grad_norm', 'grasp', 'grow', 'growable_convs',
    'hessian_gradient_product',
    'is_evolved', 'iter_blocks', 'relative_error', 'set_fast_forward', 'snip', 'strip_blocks', 'synflow',
    'synflow_conv', 'taylor'
]
