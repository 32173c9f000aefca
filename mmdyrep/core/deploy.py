"""Deploy (Algorithm 1 line 13): an evolved model back to plain convs, eval output unchanged."""
from typing import List, Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import transforms as T
from .block import DyRepBlock, get_module, iter_blocks, set_module
from .branches import DyRepError


def deploy(model: nn.Module) -> List[str]:
    """Replace every outermost DyRep block by one plain ``nn.Conv2d`` (with bias), in place.

    Nested blocks collapse with their outer block. Returns the names replaced."""
    done: List[str] = []
    for name, _ in list(iter_blocks(model)):
        if any(name.startswith(outer + '.') for outer in done):
            continue
        block = get_module(model, name)
        set_module(model, name, block.fuse())
        done.append(name)
    return done


@torch.no_grad()
def fold_conv_bias(model: nn.Module, conv_name: str, norm_name: Optional[str]) -> None:
    """Remove a conv's bias, keeping the eval output: into the following BN's running mean
    (``bn(conv(x) + b) == bn'(conv(x))``); without a BN the bias must be zero."""
    conv = get_module(model, conv_name)
    if isinstance(conv, DyRepBlock):
        raise DyRepError(f"'{conv_name}' is still a DyRep block: deploy first")
    if conv.bias is None:
        return
    if norm_name is None:
        if conv.bias.abs().max() > 0:
            raise DyRepError(f"'{conv_name}' has a non-zero bias and no BN to fold it into")
    else:
        norm = get_module(model, norm_name)
        if not isinstance(norm, _BatchNorm):
            raise DyRepError(f"'{norm_name}' is a {type(norm).__name__}, not a BN: cannot fold the bias of "
                             f"'{conv_name}'")
        T.fold_bias_into_bn(conv.bias, norm)
    conv.bias = None


__all__ = ['deploy', 'fold_conv_bias']
