"""Parameters and FLOPs of a (possibly evolved) model and of its deployed form.

FLOPs are multiply-accumulates of conv and linear layers only, counted by mmengine's
``FlopAnalyzer`` (fvcore's jit tracer): the convention of the ResNet / DyRep papers
(ResNet-50 at 224×224: 4.09 G, 25.6 M parameters). BN, pooling and additions are not counted.
"""
import copy
from typing import Sequence

import torch
from torch import nn

COUNTED_OPS = ('conv', 'linear')


def count(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> dict:
    """``{'params': int, 'flops': int}`` of ``model`` for one input of ``input_shape``."""
    from mmengine.analysis import FlopAnalyzer
    ref = next(model.parameters())
    inputs = torch.zeros(1, *input_shape, dtype=ref.dtype, device=ref.device)
    was_training = model.training
    model.eval()
    try:
        analyzer = FlopAnalyzer(model, (inputs, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        by_op = analyzer.by_operator()
    finally:
        model.train(was_training)
    return {
        'params': sum(p.numel() for p in model.parameters()),
        'flops': int(sum(by_op.get(op, 0) for op in COUNTED_OPS)),
    }


def deployed_count(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> dict:
    """:func:`count` of ``model`` deployed (a copy: every DyRep block folded into its plain conv)."""
    from .dyrep_resnet import switch_to_deploy
    deployed = copy.deepcopy(model)
    switch_to_deploy(deployed)
    return count(deployed, input_shape)


def complexity(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> dict:
    """Params / FLOPs now (training-time structure) and after deploy (on a copy)."""
    now = count(model, input_shape)
    after = deployed_count(model, input_shape)
    return {'params': now['params'], 'flops': now['flops'], 'deployed_params': after['params'],
            'deployed_flops': after['flops']}
