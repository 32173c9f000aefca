"""The DyRep block and the model-level grow (Rep, Eq. 5-8) and cut (Dep, Eq. 9-10).

A :class:`DyRepBlock` replaces one K×K ``nn.Conv2d`` of a model. It keeps that conv as its
``origin`` (the K×K branch of Table 1, same parameter objects, plus a bias that Eq. 6
needs) and adds OP-BN branches in ``branches``; its output is ``origin(x) + sum(branch(x))``.
The origin and the K×K conv inside a ``1x1_kxk`` branch may themselves be grown into
blocks, to any depth.

Exactness is stated for eval mode (BNs use running statistics): growing, cutting and
fusing never change a model's eval-mode output beyond float rounding.
"""
import contextlib
import math
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import transforms as T
from .branches import (BRANCH_TYPES, Branch, ConvSpec, DyRepError, NormFactory, UnsupportedConvError,
                       build_branch, default_norm_factory, kernel_of)
from .fast_block import merged_forward
from .grouped_block import pack_block
from .options import check_branches, check_gamma_init


def ensure_bias_(conv: nn.Conv2d) -> None:
    """Give ``conv`` a zero bias parameter if it has none (the origin needs one for Eq. 6)."""
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype,
                                             device=conv.weight.device))
        conv.dyrep_added_bias = True


#: Nesting count of :func:`per_branch_forward` (a list, so the context manager can change it in place).
_PER_BRANCH = [0]


@contextlib.contextmanager
def per_branch_forward() -> Iterator[None]:
    """Inside, every DyRep block runs its per-branch reference forward (``fast_forward`` ignored), so
    each conv and BN is called as a module: for forward hooks that look at them one by one."""
    _PER_BRANCH[0] += 1
    try:
        yield
    finally:
        _PER_BRANCH[0] -= 1


class DyRepBlock(nn.Module):
    """A K×K conv evolved into ``origin + sum(branches)``.

    Args:
        origin: the conv being replaced (or an already evolved block); kept as is.
        branches: branch modules by type name (see :data:`BRANCH_TYPES`).
    """

    def __init__(self, origin: nn.Module, branches: Optional[Mapping[str, Branch]] = None):
        super().__init__()
        self.spec = origin.spec if isinstance(origin, DyRepBlock) else ConvSpec.from_conv(origin)
        conv = origin
        while isinstance(conv, DyRepBlock):
            conv = conv.origin
        ensure_bias_(conv)
        self.origin = origin
        self.branches = nn.ModuleDict(dict(branches or {}))

    # conv-like attributes, for code that inspects the module it replaced
    @property
    def in_channels(self) -> int:
        return self.spec.in_channels

    @property
    def out_channels(self) -> int:
        return self.spec.out_channels

    @property
    def kernel_size(self) -> Tuple[int, int]:
        return (self.spec.kernel_size, ) * 2

    @property
    def stride(self) -> Tuple[int, int]:
        return (self.spec.stride, ) * 2

    #: On by default: :func:`~mmdyrep.core.fast_block.merged_forward` computes the block's function with
    #: fewer ops: the origin and every branch whose BNs use running statistics (mmdet's norm_eval=True)
    #: as ONE K×K conv; with training-mode BNs the BNs grouped (:mod:`mmdyrep.core.grouped_block`), or a
    #: stem's 1×1–AVG branch pooled first. Same outputs and gradients up to rounding. Set per block
    #: (``set_fast_forward(model, False)``), for a whole backbone (``DyRepResNet(fast_forward=
    #: False)``) or for all (``DyRepBlock.fast_forward = False``) to run the per-branch reference forward.
    #: Ignored while tracing (FLOP counts stay those of the per-branch structure) and inside
    #: :func:`per_branch_forward`.
    fast_forward: bool = True

    def forward(self, x: Tensor) -> Tensor:
        if self.fast_forward and not torch.jit.is_tracing() and not _PER_BRANCH[0]:
            return merged_forward(self, x)
        out = self.origin(x)
        for branch in self.branches.values():
            out = out + branch(x)
        return out

    def extra_repr(self) -> str:
        s = self.spec
        return (f'{s.in_channels}, {s.out_channels}, kernel_size={s.kernel_size}, stride={s.stride}, '
                f'padding={s.padding}, dilation={s.dilation}, groups={s.groups}')

    # ------------------------------------------------------------------ weights
    def equivalent_kernel(self) -> T.KernelBias:
        """Kernel and bias of the single K×K conv equal to this block in eval mode (Eq. 2)."""
        kernel, bias = kernel_of(self.origin)
        for branch in self.branches.values():
            k, b = branch.equivalent_kernel()
            kernel, bias = kernel + k, bias + b
        return kernel, bias

    def origin_conv(self) -> nn.Conv2d:
        conv = self.origin
        while isinstance(conv, DyRepBlock):
            conv = conv.origin
        return conv

    def _set_origin_(self, kernel: Tensor, bias: Tensor) -> None:
        conv = self.origin_conv()
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)

    def _origin_kernel(self, kernel: Tensor, bias: Tensor) -> Tuple[T.KernelBias, T.KernelBias]:
        conv = self.origin_conv()
        return (conv.weight, conv.bias), (kernel.detach().to(conv.weight), bias.detach().to(conv.bias))

    @torch.no_grad()
    def absorb_(self, kernel: Tensor, bias: Tensor) -> None:
        """Dep, Eq. 10: add a removed branch's K×K kernel and bias to the (innermost) origin conv."""
        self._set_origin_(*T.dep_origin(*self._origin_kernel(kernel, bias)))

    @torch.no_grad()
    def compensate_(self, kernel: Tensor, bias: Tensor) -> None:
        """Rep, Eq. 6: subtract a new branch's K×K kernel and bias from the (innermost) origin conv."""
        self._set_origin_(*T.rep_origin(*self._origin_kernel(kernel, bias)))

    def importances(self) -> Dict[str, float]:
        """Eq. 9 per branch: ``s_j = mean |gamma|`` of the branch's last BN (not normalised)."""
        return {name: branch.importance() for name, branch in self.branches.items()}

    @torch.no_grad()
    def cut_(self, names: Iterable[str]) -> None:
        """Dep (Eq. 10): absorb the named branches into the origin and remove them."""
        names = list(names)
        missing = [n for n in names if n not in self.branches]
        if missing:
            raise DyRepError(f'cannot cut {missing}: the block has branches {list(self.branches)}')
        for name in names:
            self.absorb_(*self.branches[name].equivalent_kernel())
            del self.branches[name]
        pack_block(self)

    def fuse(self) -> nn.Conv2d:
        """Deploy: one plain conv (with bias) equal to this block in eval mode."""
        kernel, bias = self.equivalent_kernel()
        s = self.spec
        conv = nn.Conv2d(s.in_channels, s.out_channels, s.kernel_size, s.stride, s.padding, s.dilation, s.groups,
                         bias=True).to(kernel)
        with torch.no_grad():
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
        conv.train(self.training)
        return conv

    # ---------------------------------------------------------------- structure
    def describe(self) -> dict:
        """The structure of this block as plain data (see :mod:`mmdyrep.core.structure`)."""
        return {
            'spec': self.spec.to_list(),
            'origin': describe(self.origin),
            'branches': {
                name: {slot: describe(getattr(b, slot)) for slot in b.growable if describe(getattr(b, slot))}
                for name, b in self.branches.items()
            },
        }


def describe(module: nn.Module) -> Optional[dict]:
    """``None`` for a plain conv, the nested description for a block."""
    return module.describe() if isinstance(module, DyRepBlock) else None


# --------------------------------------------------------------------- model ops
def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise DyRepError(f"the model has no module named '{name}'") from None


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def iter_blocks(model: nn.Module) -> Iterator[Tuple[str, DyRepBlock]]:
    """All DyRep blocks of ``model`` (nested ones included), outer before inner."""
    for name, module in model.named_modules():
        if isinstance(module, DyRepBlock):
            yield name, module


def set_fast_forward(model: nn.Module, enabled: bool = True) -> int:
    """Set ``fast_forward`` on every DyRep block of ``model`` (new blocks start with the class
    default); returns how many blocks were set."""
    blocks = [b for _, b in iter_blocks(model)]
    for block in blocks:
        block.fast_forward = enabled
    return len(blocks)


def growable_convs(model: nn.Module) -> Dict[str, nn.Conv2d]:
    """Every conv that could grow: K×K (odd K > 1) ``nn.Conv2d`` with a supported shape.

    Includes the origins of blocks and the K×K convs inside ``1x1_kxk`` branches (the
    recursion of Sec. 4.1)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            try:
                ConvSpec.from_conv(module, name)
            except UnsupportedConvError:
                continue
            found[name] = module
    return found


def resolve_branches(spec: ConvSpec, name: str, branches: Optional[Sequence[str]],
                     skip_unfit: bool = False) -> Tuple[str, ...]:
    """The branches to add to conv ``name``: all that fit by default, else those asked for
    (an unfit one is an error, or skipped with ``skip_unfit``)."""
    if branches is None:
        return spec.valid_branches()
    branches = check_branches(branches, name)
    if skip_unfit:
        branches = spec.valid_branches(branches)
    for branch in branches:
        reason = spec.allows(branch)
        if reason:
            raise UnsupportedConvError(f'{name}: {reason}')
    if not branches:
        raise DyRepError(f'{name}: no branches to add')
    return branches


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode without gradients inside; every module's mode restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes.items():
            module.training = mode


@contextlib.contextmanager
def calibration_mode(model: nn.Module, norms: Sequence[nn.Module]) -> Iterator[None]:
    """Everything in eval mode except ``norms``, which restart their statistics as a cumulative
    average (``momentum=None``); no gradients. Restores modes and momenta afterwards."""
    momenta = {}
    with frozen_eval(model):
        for norm in norms:
            if not isinstance(norm, _BatchNorm):
                continue
            momenta[norm] = norm.momentum
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        try:
            yield
        finally:
            for norm, momentum in momenta.items():
                norm.momentum = momentum


def grow(model: nn.Module,
         names: Sequence[str],
         branches: Optional[Sequence[str]] = None,
         gamma_init: float = 0.01,
         calibrate: Optional[Callable[[nn.Module], None]] = None,
         norm_factory: Optional[NormFactory] = None,
         broadcast: Optional[Callable[[List[nn.Module]], None]] = None,
         sync_norms: Optional[Callable[[List[nn.Module]], None]] = None,
         skip_unfit: bool = False) -> Dict[str, DyRepBlock]:
    """Training-aware Rep (Sec. 4.1): grow each conv in ``names`` into a DyRep block.

    1. New branches (default: every type that fits the conv) get random convs, middle BNs
       with gamma = 1 and a last BN with gamma = ``gamma_init`` and beta = 0 (Eq. 7).
    2. ``broadcast(branches)`` may first make the new branches' initial weights equal on all
       processes; ``calibrate(model)`` runs forward passes (e.g. 20 training batches) while only the new
       BNs collect statistics (cumulative average, no gradients); ``sync_norms(norms)`` may
       then average them over processes.
    3. Eq. 6: the origin absorbs minus the new branches' equivalent kernels and biases
       (Eq. 8 with the calibrated statistics), so the eval-mode output is unchanged.

    Everything is validated before the model is touched. New modules are created on the
    conv's device and dtype and take the conv's training flag; ``norm_factory(C)`` builds
    their BNs (default ``model.dyrep_norm_factory`` if the model has one, else BatchNorm2d).
    With ``skip_unfit``, requested branch types that do not fit a conv (residual on a
    stride-2 conv) are left out instead of raising. Returns the new blocks by name.
    """
    if isinstance(names, str):
        names = [names]
    if len(set(names)) != len(names):
        raise DyRepError(f'duplicate names in {list(names)}')
    check_gamma_init(gamma_init, 'grow')
    norm_factory = norm_factory or getattr(model, 'dyrep_norm_factory', None) or default_norm_factory
    plans = []
    for name in names:
        module = get_module(model, name)
        if isinstance(module, DyRepBlock):
            raise DyRepError(f"'{name}' is already a DyRep block; grow its origin '{name}.origin' instead")
        spec = ConvSpec.from_conv(module, name)
        plans.append((name, module, spec, resolve_branches(spec, name, branches, skip_unfit)))

    blocks: Dict[str, DyRepBlock] = {}
    new_norms: List[nn.Module] = []
    for name, conv, spec, types in plans:
        new = {}
        for branch_type in types:
            branch = build_branch(branch_type, spec, norm_factory)
            branch.reset_parameters(gamma_init)
            branch.to(device=conv.weight.device, dtype=conv.weight.dtype)
            branch.train(conv.training)
            new[branch_type] = branch
            new_norms.extend(branch.norms())
        block = DyRepBlock(conv, new)
        block.train(conv.training)
        set_module(model, name, block)
        blocks[name] = block

    if broadcast is not None:
        broadcast([branch for block in blocks.values() for branch in block.branches.values()])
    if calibrate is not None:
        with calibration_mode(model, new_norms):
            calibrate(model)
        if sync_norms is not None:
            sync_norms(new_norms)

    for block in blocks.values():
        for branch in block.branches.values():
            kernel, bias = branch.equivalent_kernel()
            block.compensate_(kernel, bias)
        pack_block(block)
    return blocks


def dep_decision(importances: Mapping[str, float], threshold: float = 0.02) -> List[str]:
    """Sec. 4.2: the branches to cut from one block.

    With ``s_j`` the branch importances (Eq. 9, the added branches only; the origin is never
    cut), cut every branch with ``s_j < mean(s)`` when the population standard deviation
    ``sqrt(mean((s - mean(s))^2))`` exceeds ``threshold`` (lambda). Fewer than two branches:
    nothing to compare, nothing cut."""
    if len(importances) < 2:
        return []
    values = list(importances.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean)**2 for v in values) / len(values))
    if std <= threshold:
        return []
    return [name for name, s in importances.items() if s < mean]


def cut(model: nn.Module, threshold: float = 0.02, names: Optional[Iterable[str]] = None) -> Dict[str, List[str]]:
    """Dep on every block of ``model`` (or the blocks in ``names``): returns ``{block: [cut branches]}``.

    Decisions are taken for all blocks first, from the current BN scales, then applied outer
    to inner; a block that disappeared with a cut branch is skipped."""
    selected = dict(iter_blocks(model))
    if names is not None:
        names = list(names)
        for name in names:
            if not isinstance(get_module(model, name), DyRepBlock):
                raise DyRepError(f"'{name}' is not a DyRep block")
        selected = {n: selected[n] for n in names}
    decisions = {n: dep_decision(b.importances(), threshold) for n, b in selected.items()}
    done = {}
    for name, branch_names in decisions.items():
        if not branch_names:
            continue
        try:
            block = model.get_submodule(name)
        except AttributeError:  # removed with an outer branch
            continue
        if block is not selected[name]:
            continue
        block.cut_(branch_names)
        done[name] = branch_names
    return done


def cut_branches(model: nn.Module, block_name: str, branch_names: Sequence[str]) -> None:
    """Cut named branches of one block (Eq. 10); unknown block or branch: error, nothing cut."""
    block = get_module(model, block_name)
    if not isinstance(block, DyRepBlock):
        raise DyRepError(f"'{block_name}' is not a DyRep block (it is a {type(block).__name__})")
    block.cut_(branch_names)


__all__ = [
    'BRANCH_TYPES', 'DyRepBlock', 'calibration_mode', 'cut', 'cut_branches', 'dep_decision', 'describe',
    'frozen_eval', 'grow',
    'growable_convs', 'iter_blocks', 'per_branch_forward', 'set_fast_forward'
]
