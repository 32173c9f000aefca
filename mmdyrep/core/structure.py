"""The evolved structure of a model as plain, JSON-able data.

``extract_structure(model)`` gives::

    {'format': 'mmdyrep.structure', 'version': 1,
     'blocks': {'layer1.0.conv2': {'spec': [in, out, K, stride, padding, dilation, groups],
                                   'origin': None | <block>,
                                   'branches': {'1x1': {}, '1x1_kxk': {'kxk': <block>}, ...}}}}

where ``<block>`` is the same dict for a nested block and a branch lists only its grown
slots. ``apply_structure(fresh_model, structure)`` rebuilds the same modules (with fresh
weights) so that the evolved state dict then loads with no missing or unexpected keys.
The blocks themselves stay the single source of truth: this data is always derived.
"""
import copy
import json
from typing import Optional

import torch
from torch import nn

from .block import DyRepBlock, get_module, iter_blocks, set_module
from .branches import (BRANCH_CLASSES, ConvSpec, DyRepError, NormFactory, UnsupportedConvError, build_branch,
                       default_norm_factory)

FORMAT = 'mmdyrep.structure'
VERSION = 1


#: The state-dict key (under the backbone's prefix) that carries the evolved structure.
STRUCTURE_KEY = 'dyrep_structure'


def encode_structure(structure: dict) -> torch.Tensor:
    """``structure`` as a uint8 tensor of its JSON, the form a state dict carries it in (``STRUCTURE_KEY``)."""
    data = json.dumps(structure).encode()  # keep branch order: it is the summation order
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def decode_structure(value, key: str) -> dict:
    """The structure from a state-dict entry :func:`encode_structure` wrote (or a dict); ``key`` names it
    in the error of a corrupt entry."""
    try:
        if isinstance(value, torch.Tensor):
            return json.loads(bytes(value.cpu().to(torch.uint8).tolist()).decode())
        if isinstance(value, dict):
            return value
        raise TypeError(f'unexpected type {type(value).__name__}')
    except (TypeError, ValueError, UnicodeDecodeError) as e:
        raise DyRepError(f"checkpoint entry '{key}' is not a valid DyRep structure ({e}); "
                         'the file may be corrupt') from None


def extract_structure(model: nn.Module) -> dict:
    """The structure of every outermost DyRep block of ``model``."""
    blocks = {}
    for name, block in iter_blocks(model):
        if not any(name.startswith(outer + '.') for outer in blocks):
            blocks[name] = block.describe()
    return {'format': FORMAT, 'version': VERSION, 'blocks': blocks}


def is_evolved(structure: Optional[dict]) -> bool:
    return bool(structure and structure.get('blocks'))


def _check_block(desc, spec: ConvSpec, where: str) -> None:
    if not isinstance(desc, dict) or set(desc) != {'spec', 'origin', 'branches'}:
        raise DyRepError(f"{where}: a block must be a dict with keys 'spec', 'origin', 'branches', got {desc!r:.200}")
    if list(desc['spec']) != spec.to_list():
        raise DyRepError(f'{where}: the structure was made for a conv with spec {list(desc["spec"])} '
                         f'(in, out, K, stride, padding, dilation, groups) but the model has {spec.to_list()}')
    if desc['origin'] is not None:
        _check_block(desc['origin'], spec, where + '.origin')
    if not isinstance(desc['branches'], dict):
        raise DyRepError(f'{where}: branches must be a dict, got {desc["branches"]!r:.200}')
    for branch_type, slots in desc['branches'].items():
        reason = spec.allows(branch_type)
        if reason:
            raise DyRepError(f'{where}: {reason}')
        growable = BRANCH_CLASSES[branch_type].growable
        if not isinstance(slots, dict) or not set(slots) <= set(growable):
            raise DyRepError(f'{where}.branches.{branch_type}: only {list(growable)} can be grown, got {slots!r:.200}')
        inner = BRANCH_CLASSES[branch_type].slot_specs(spec)
        for slot, sub in slots.items():
            _check_block(sub, inner[slot], f'{where}.branches.{branch_type}.{slot}')


def _build_block(conv: nn.Module, desc: dict, norm_factory: NormFactory) -> DyRepBlock:
    origin = conv if desc['origin'] is None else _build_block(conv, desc['origin'], norm_factory)
    spec = ConvSpec.from_conv(conv)
    branches = {}
    for branch_type, slots in desc['branches'].items():
        branch = build_branch(branch_type, spec, norm_factory)
        for slot, sub in slots.items():
            setattr(branch, slot, _build_block(getattr(branch, slot), sub, norm_factory))
        branch.to(device=conv.weight.device, dtype=conv.weight.dtype)
        branch.train(conv.training)
        branches[branch_type] = branch
    block = DyRepBlock(origin, branches)
    block.train(conv.training)
    return block


def strip_blocks(model: nn.Module) -> None:
    """Undo every DyRep block structurally: each outermost block becomes its innermost origin
    conv again (dropping the bias that growing added). Weights are NOT preserved in the
    function sense: use :func:`mmdyrep.core.deploy` for that; this is for loading weights next."""
    for name, _ in list(iter_blocks(model)):
        try:
            block = model.get_submodule(name)
        except AttributeError:
            continue
        if not isinstance(block, DyRepBlock):
            continue
        conv = block.origin_conv()
        if getattr(conv, 'dyrep_added_bias', False):
            conv.bias = None
            del conv.dyrep_added_bias
        set_module(model, name, conv)


def apply_structure(model: nn.Module,
                    structure: dict,
                    norm_factory: Optional[NormFactory] = None,
                    replace: bool = False) -> None:
    """Rebuild the blocks of ``structure`` in ``model`` (new weights; load the state dict next).

    Without ``replace`` the model must not be evolved at those places; with it, the model's
    current blocks are stripped first (:func:`strip_blocks`). Everything is checked before
    the model is touched: on any mismatch a :class:`DyRepError` says where and what, and the
    model is left as it was."""
    if not isinstance(structure, dict) or structure.get('format') != FORMAT:
        raise DyRepError(f"not an mmdyrep structure (expected format '{FORMAT}'): {str(structure)[:200]}")
    if structure.get('version') != VERSION:
        raise DyRepError(f'unsupported structure version {structure.get("version")} (this mmdyrep reads {VERSION})')
    norm_factory = norm_factory or getattr(model, 'dyrep_norm_factory', None) or default_norm_factory
    blocks = structure.get('blocks')
    if not isinstance(blocks, dict):
        raise DyRepError(f"structure['blocks'] must be a dict, got {type(blocks).__name__}")
    for name, desc in blocks.items():
        try:
            conv = get_module(model, name)
        except DyRepError as e:
            raise DyRepError(f'structure does not fit the model: {e}') from None
        if isinstance(conv, DyRepBlock) and not replace:
            raise DyRepError(f"'{name}' is already a DyRep block: apply a structure to a model built fresh")
        try:
            spec = conv.spec if isinstance(conv, DyRepBlock) else ConvSpec.from_conv(conv, name)
        except UnsupportedConvError as e:
            raise DyRepError(f'structure does not fit the model: {e}') from None
        _check_block(desc, spec, name)
    if replace:
        strip_blocks(model)
    for name, desc in blocks.items():
        set_module(model, name, _build_block(get_module(model, name), copy.deepcopy(desc), norm_factory))


__all__ = [
    'FORMAT', 'STRUCTURE_KEY', 'VERSION', 'apply_structure', 'decode_structure', 'encode_structure',
    'extract_structure', 'is_evolved', 'strip_blocks'
]
