"""Which norm normalises which conv: found from the model itself, by one hooked forward pass.

The paper's operations are OP-BN (Sec. 4.1): a conv together with the BN that normalises its
output. Saliency (Eq. 4 over the whole operation), Dep and deploy's bias folding all need that
pairing. Toolboxes build it differently (``conv1``/``bn1`` attributes, mmcv ``ConvModule``s with
``conv``/``bn``, plain ``Sequential(conv, bn, relu, ...)`` stems), so nothing here reads
attribute names: a forward pass records which tensor each conv (or DyRep block) returned and
which tensor each BN received.

Pure PyTorch: no OpenMMLab imports.
"""
from typing import Dict, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import block as B

#: Kinds of grow candidates (Sec. 4.1: every K×K conv, the newly added ones included).
KINDS = ('plain', 'origin', 'inner')


def example_input(model: nn.Module, size: int = 64) -> Tensor:
    """A zero image batch of one for ``model``: the channels of its first conv, ``size``² pixels,
    on that conv's device and dtype."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight
            return torch.zeros(1, module.in_channels, size, size, dtype=w.dtype, device=w.device)
    raise B.DyRepError(f'{type(model).__name__} has no Conv2d: cannot build an example input')


def following_norms(model: nn.Module, inputs: Optional[Tensor] = None) -> Dict[str, Optional[str]]:
    """``{conv name: name of the BN that normalises its output, or None}`` for every ``nn.Conv2d``
    and DyRep block of ``model``, from one eval-mode forward of ``inputs`` (default
    :func:`example_input`).

    A conv is followed by a BN when the tensor it returns is the tensor that BN receives. The
    origin of a DyRep block returns one summand of the block's output, so it takes the block's
    norm (recursively, for nested blocks). Names are paths in ``model`` (``named_modules``).
    The model's modes, buffers and parameters are left as they were.
    """
    inputs = example_input(model) if inputs is None else inputs
    names = {m: n for n, m in model.named_modules()}
    produced: Dict[int, str] = {}
    keep = []  # the produced tensors stay alive, so their ids stay unique during the pass
    direct: Dict[str, str] = {}

    def after_conv(module, args, output):
        if isinstance(output, Tensor):
            produced[id(output)] = names[module]
            keep.append(output)

    def before_norm(module, args):
        if args and isinstance(args[0], Tensor):
            conv = produced.get(id(args[0]))
            if conv is not None and conv not in direct:
                direct[conv] = names[module]

    handles = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, B.DyRepBlock)):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, _BatchNorm):
            handles.append(module.register_forward_pre_hook(before_norm))
    try:
        with B.per_branch_forward(), B.frozen_eval(model):
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()

    result: Dict[str, Optional[str]] = {}

    def resolve(name: str) -> Optional[str]:
        if name in result:
            return result[name]
        norm = direct.get(name)
        parent, _, attr = name.rpartition('.')
        if norm is None and attr == 'origin' and parent and isinstance(model.get_submodule(parent), B.DyRepBlock):
            norm = resolve(parent)
        result[name] = norm
        return norm

    for module, name in names.items():
        if isinstance(module, (nn.Conv2d, B.DyRepBlock)) and name:
            resolve(name)
    return result


def uses_batch_stats(norm: nn.Module) -> bool:
    """Whether ``norm`` normalises with the statistics of the batch now (a BN in training mode, or
    one without running statistics), which makes it blind to the scale of its input."""
    return isinstance(norm, _BatchNorm) and (norm.training or not norm.track_running_stats)


def candidate_kind(model: nn.Module, name: str) -> str:
    """``'origin'`` for the origin of a DyRep block, ``'inner'`` for a K×K conv inside a branch
    (the ``1x1_kxk`` branch's), ``'plain'`` for any other conv (:data:`KINDS`)."""
    parent, _, attr = name.rpartition('.')
    module = model.get_submodule(parent) if parent else model
    if isinstance(module, B.DyRepBlock) and attr == 'origin':
        return 'origin'
    if isinstance(module, B.Branch):
        return 'inner'
    return 'plain'


__all__ = ['KINDS', 'candidate_kind', 'example_input', 'following_norms', 'uses_batch_stats']
