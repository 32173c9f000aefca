"""DyRepResNet: a toolbox's own ResNet whose K×K convs the DyRep core can evolve.

The class is the toolbox's ResNet (mmdet, mmseg or mmpretrain) plus :class:`DyRepResNetMixin`:

* un-evolved it *is* the stock ResNet (same modules, keys, outputs);
* the evolved structure travels inside the state dict under ``<prefix>dyrep_structure``
  (a uint8 tensor of JSON, present only when evolved), and is rebuilt before the weights
  load, so every load path works with no hook (``load_checkpoint``, ``load_from``,
  ``resume``, ``init_detector``, ``init_model``, ``load_state_dict``);
* a plain (stock) checkpoint loads into it strictly; with a static mode (``repvgg``,
  ``dbb``) the branches are then re-grown around the loaded weights (Rep, output kept);
* ``switch_to_deploy()`` fuses everything back into the stock ResNet (biases folded into
  the following norms), so the result loads into the stock class with ``strict=True``.
"""
import copy
import fnmatch
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from mmdyrep.core import (DyRepBlock, DyRepError, apply_structure, deploy, extract_structure, fold_conv_bias,
                          following_norms, grow, growable_convs, is_evolved, iter_blocks, strip_blocks)
from mmdyrep.core.block import set_fast_forward
from mmdyrep.core.options import check_gamma_init
from mmdyrep.core.structure import STRUCTURE_KEY, decode_structure, encode_structure

REP_MODES = ('dyrep', 'origin', 'repvgg', 'dbb')
#: Branches of the static baselines (the origin K×K is always there): Table 1.
STATIC_BRANCHES = {
    'repvgg': ('1x1', 'residual'),
    'dbb': ('1x1_kxk', '1x1_avg', '1x1'),
}


class DyRepResNetMixin:
    """Adds DyRep to a ResNet class of mmdet / mmseg / mmpretrain (put it first in the bases).

    Args (besides the toolbox ResNet's own):
        rep_mode: ``'dyrep'`` (start plain, evolved by the DyRepHook), ``'origin'`` (plain
            baseline), ``'repvgg'`` (K×K + 1×1 + residual on every candidate conv from the
            start) or ``'dbb'`` (K×K + 1×1–K×K + 1×1–AVG + 1×1, as DBB).
        grow_candidates: fnmatch patterns of conv names that may grow (``None``: every K×K conv
            with K > 1 outside frozen stages, stem included). Frozen stages never grow.
        static_gamma_init: gamma of the new branches' last BN in the static modes (1.0, as DBB).
        fast_forward: ``True`` (default): every DyRep block runs
            :func:`mmdyrep.core.fast_block.merged_forward`, the same function and gradients computed
            with fewer ops (one K×K conv for the parts whose BNs use running statistics, as with
            ``norm_eval=True``; training-mode BNs grouped into one BN per stage of the block).
            ``False``: every block (those grown later included) runs the per-branch reference forward.
    """

    def __init__(self,
                 *args,
                 rep_mode: str = 'dyrep',
                 grow_candidates: Optional[Sequence[str]] = None,
                 static_gamma_init: float = 1.0,
                 fast_forward: bool = True,
                 **kwargs):
        if rep_mode not in REP_MODES:
            raise DyRepError(f"unknown rep_mode '{rep_mode}' (choose from {', '.join(REP_MODES)})")
        if grow_candidates is not None and (isinstance(grow_candidates, str)
                                            or not all(isinstance(p, str) for p in grow_candidates)):
            raise DyRepError(f'grow_candidates must be a list of name patterns, got {grow_candidates!r}')
        check_gamma_init(static_gamma_init, f'{type(self).__name__} static_gamma_init')
        super().__init__(*args, **kwargs)
        self.rep_mode = rep_mode
        self.grow_candidates = list(grow_candidates) if grow_candidates is not None else None
        self.static_gamma_init = static_gamma_init
        self.fast_forward = bool(fast_forward)
        self._regrow_static = False
        self.register_load_state_dict_post_hook(_after_load)
        if rep_mode in STATIC_BRANCHES:
            self._grow_static()

    # ----------------------------------------------------------- what may grow
    def dyrep_norm_factory(self, num_features: int) -> nn.Module:
        """New branches' norms follow the backbone's ``norm_cfg`` (BN, SyncBN, ...)."""
        from mmcv.cnn import build_norm_layer
        return build_norm_layer(self.norm_cfg, num_features)[1]

    def frozen_prefixes(self) -> List[str]:
        prefixes = []
        if self.frozen_stages >= 0:
            prefixes += ['stem.'] if self.deep_stem else ['conv1']
        prefixes += [f'layer{i}.' for i in range(1, self.frozen_stages + 1)]
        return prefixes

    def is_grow_candidate(self, name: str) -> bool:
        """Whether conv ``name`` (a path inside this backbone) may grow."""
        for prefix in self.frozen_prefixes():
            if name == prefix.rstrip('.') or name.startswith(prefix if prefix.endswith('.') else prefix + '.'):
                return False
        if self.grow_candidates is None:
            return True
        return any(fnmatch.fnmatchcase(name, p) for p in self.grow_candidates)

    def dyrep_candidates(self) -> Dict[str, nn.Conv2d]:
        return {n: m for n, m in growable_convs(self).items() if self.is_grow_candidate(n)}

    def _grow_static(self, calibrate: Optional[Callable] = None) -> None:
        names = list(self.dyrep_candidates())  # called on a plain model only
        grow(self, names, STATIC_BRANCHES[self.rep_mode], gamma_init=self.static_gamma_init, calibrate=calibrate,
             skip_unfit=True)

    def forward(self, x):
        if not self.fast_forward:  # blocks grown since the last call start with the class default (True)
            set_fast_forward(self, False)
        return super().forward(x)

    # ------------------------------------------------------------- state dict
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        structure = extract_structure(self)
        if is_evolved(structure):
            destination[prefix + STRUCTURE_KEY] = encode_structure(structure)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + STRUCTURE_KEY
        if key in state_dict:
            structure = decode_structure(state_dict[key], key)
            if structure != extract_structure(self):
                try:
                    apply_structure(self, structure, replace=True)
                except DyRepError as e:
                    raise DyRepError(f'the checkpoint\'s DyRep structure does not fit this {type(self).__name__} '
                                     f'(depth {self.depth}): {e}') from None
                self._track_new_params()
        elif any(isinstance(m, DyRepBlock) for m in self.modules()) and self._is_plain_checkpoint(
                state_dict, prefix):
            # stock ResNet weights into an evolved / static model: load them plain
            strip_blocks(self)
            self._regrow_static = self.rep_mode in STATIC_BRANCHES
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if key in unexpected_keys:
            unexpected_keys.remove(key)

    def _track_new_params(self) -> None:
        """Loading during mmengine's ``init_weights`` (``init_cfg=Pretrained``) may create
        parameters; register them in its shared ``_params_init_info`` (it asserts otherwise)."""
        info = getattr(self, '_params_init_info', None)
        if info is None:
            return
        for name, param in self.named_parameters():
            if param not in info:
                info[param]['init_info'] = f'created by DyRep when loading a checkpoint ({name})'
                info[param]['tmp_mean_value'] = param.data.mean().cpu()
        for module in self.modules():
            module._params_init_info = info

    def _is_plain_checkpoint(self, state_dict, prefix) -> bool:
        for name, _ in iter_blocks(self):
            if prefix + name + '.weight' in state_dict:
                return True
        return False

    # ------------------------------------------------------------------ deploy
    def switch_to_deploy(self) -> List[str]:
        """Fuse every DyRep block into its conv and fold the bias into the norm that normalises
        its output (found by one traced forward, :func:`~mmdyrep.core.following_norms`): the
        backbone becomes (module by module) the stock ResNet. Eval output unchanged."""
        names = deploy(self)
        if names:
            norms = following_norms(self)
            for name in names:
                fold_conv_bias(self, name, norms.get(name))
        self.rep_mode = 'origin'
        return names


def _after_load(module, incompatible_keys) -> None:
    if getattr(module, '_regrow_static', False):
        module._regrow_static = False
        module._grow_static()
        module._track_new_params()


def find_backbone(model: nn.Module) -> Tuple[str, DyRepResNetMixin]:
    """``(name, module)`` of the first DyRep backbone inside ``model`` (``''`` when it is ``model``)."""
    for name, module in model.named_modules():
        if isinstance(module, DyRepResNetMixin):
            return name, module
    raise DyRepError(f'the model ({type(model).__name__}) has no DyRep backbone; use a DyRepResNet backbone '
                     "(e.g. backbone=dict(type='DyRepResNet', ...)) and import mmdyrep.models.<toolbox>_resnet in "
                     'custom_imports')


def backbone_of(model: nn.Module) -> DyRepResNetMixin:
    """The DyRep backbone inside ``model`` (:func:`find_backbone`)."""
    return find_backbone(model)[1]


def switch_to_deploy(model: nn.Module) -> List[str]:
    """Deploy every DyRepResNet inside ``model`` in place; returns the fused conv names."""
    fused = []
    for name, module in model.named_modules():
        if isinstance(module, DyRepResNetMixin):
            fused += [f'{name}.{n}' if name else n for n in module.switch_to_deploy()]
    return fused


def deploy_state_dict(model: nn.Module, state_dict: dict) -> dict:
    """An evolved state dict of ``model`` (any model containing DyRepResNets, e.g. a whole
    detector) → the state dict of the same model with stock ResNets (same keys as the stock
    toolbox classes). ``model`` itself is not changed."""
    work = copy.deepcopy(model)
    work.load_state_dict(state_dict, strict=True)
    switch_to_deploy(work)
    return work.state_dict()
