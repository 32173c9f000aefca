"""The branches of a DyRep block (paper Table 1), each in the OP-BN form of Sec. 4.1.

A branch computes something a single K×K conv (with bias) could compute, and can say
which kernel and bias that is (:meth:`Branch.equivalent_kernel`); nothing else about a
branch is special. The K×K branch is the block's *origin* (the conv that grew), so it
is not a class here. Branch names, as used in configs, structures and state-dict keys:

==============  ====================================================================
``1x1_kxk``     1×1 conv – BN – K×K conv – BN (the K×K may grow again)
``1x1_avg``     1×1 conv – BN – K×K average pooling – BN
``1x1``         1×1 conv – BN
``1xk``         1×K conv – BN
``kx1``         K×1 conv – BN
``residual``    identity – BN (in = out channels and stride 1 only)
==============  ====================================================================

Every branch emulates the same K×K conv (stride, zero padding, dilation, groups): the
1×1 / 1×K / K×1 / identity ops are centred in it (crop where the K×K padding is smaller
than the centring needs), and the 1×1–X branches pad the BN output with the value a zero
input maps to, as DBB does, so the constant term of the middle BN stays constant up to
the borders.
"""
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import transforms as T

NormFactory = Callable[[int], nn.Module]

#: Branch types that may be added to a conv (the K×K branch is the origin itself).
BRANCH_TYPES = ('1x1_kxk', '1x1_avg', '1x1', '1xk', 'kx1', 'residual')


class DyRepError(ValueError):
    """A DyRep operation was asked for something it cannot do; the model is left untouched."""


class UnsupportedConvError(DyRepError):
    """The conv's shape or options cannot be re-parameterized."""


@dataclass(frozen=True)
class ConvSpec:
    """The K×K conv a DyRep block emulates (square kernel, symmetric options)."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int
    groups: int

    @classmethod
    def from_conv(cls, conv: nn.Module, name: str = '<conv>') -> 'ConvSpec':
        """Read the spec of ``conv``; raise :class:`UnsupportedConvError` naming ``name`` and why."""
        if not isinstance(conv, nn.Conv2d):
            raise UnsupportedConvError(f'{name}: expected an nn.Conv2d, got {type(conv).__name__}')

        def square(value, what):
            value = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
            if value[0] != value[1]:
                raise UnsupportedConvError(f'{name}: {what} {value} is not the same for height and width')
            return int(value[0])

        kernel = square(conv.kernel_size, 'kernel size')
        if kernel == 1:
            raise UnsupportedConvError(f'{name}: a 1x1 conv has nothing to re-parameterize (K must be > 1)')
        if kernel % 2 == 0:
            raise UnsupportedConvError(f'{name}: even kernel size {kernel} has no centre (K must be odd)')
        if conv.padding_mode != 'zeros':
            raise UnsupportedConvError(f"{name}: padding_mode '{conv.padding_mode}' is not supported (only 'zeros')")
        stride = square(conv.stride, 'stride')
        dilation = square(conv.dilation, 'dilation')
        padding = conv.padding
        if isinstance(padding, str):
            if padding == 'valid':
                padding = 0
            elif stride == 1:  # 'same'
                padding = dilation * (kernel // 2)
            else:
                raise UnsupportedConvError(f"{name}: padding='same' with stride {stride}")
        padding = square(padding, 'padding')
        return cls(conv.in_channels, conv.out_channels, kernel, stride, padding, dilation, conv.groups)

    def to_list(self) -> List[int]:
        return list(asdict(self).values())

    def allows(self, branch_type: str) -> Optional[str]:
        """``None`` if ``branch_type`` fits this conv, else the reason it does not."""
        if branch_type not in BRANCH_TYPES:
            return f"unknown branch type '{branch_type}' (known: {', '.join(BRANCH_TYPES)})"
        if branch_type == 'residual' and (self.in_channels != self.out_channels or self.stride != 1):
            return ('residual needs in = out channels and stride 1, got '
                    f'{self.in_channels}->{self.out_channels} channels, stride {self.stride}')
        return None

    def valid_branches(self, requested=BRANCH_TYPES) -> Tuple[str, ...]:
        return tuple(b for b in requested if self.allows(b) is None)


def kernel_of(module: nn.Module) -> T.KernelBias:
    """The K×K kernel and bias of a plain conv or of anything with ``equivalent_kernel()``."""
    if isinstance(module, nn.Conv2d):
        weight = module.weight
        bias = module.bias if module.bias is not None else torch.zeros(
            weight.shape[0], dtype=weight.dtype, device=weight.device)
        return weight, bias
    return module.equivalent_kernel()


def init_conv_(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_norm_(norm: nn.Module, gamma: float) -> None:
    if isinstance(norm, _BatchNorm):
        norm.reset_running_stats()
    nn.init.constant_(norm.weight, gamma)
    nn.init.zeros_(norm.bias)


class Branch(nn.Module):
    """Base class: one OP-BN branch emulating the K×K conv ``spec``.

    Subclasses build their ops in ``__init__``, implement ``forward`` and
    ``equivalent_kernel``, keep their last BN in ``self.norm`` and list the attribute
    names of K×K convs that may grow again in ``growable``.
    """

    branch_type: str = ''
    growable: Tuple[str, ...] = ()

    def __init__(self, spec: ConvSpec, norm_factory: NormFactory):
        super().__init__()
        self.spec = spec

    @classmethod
    def slot_specs(cls, spec: ConvSpec) -> Dict[str, ConvSpec]:
        """The spec of each growable K×K conv of a branch built for ``spec``."""
        return {}

    def equivalent_kernel(self) -> T.KernelBias:
        raise NotImplementedError

    @property
    def last_norm(self) -> nn.Module:
        return self.norm

    def importance(self) -> float:
        """Eq. 9: ``s = mean_k |gamma_k|`` of the branch's last BN."""
        return float(self.last_norm.weight.detach().abs().mean())

    def norms(self) -> List[nn.Module]:
        """Every BN of this branch (nested blocks' included)."""
        return [m for m in self.modules() if isinstance(m, _BatchNorm)]

    def reset_parameters(self, gamma_init: float) -> None:
        """Random convs, unit middle BNs, last BN with ``gamma = gamma_init`` and ``beta = 0`` (Sec. 4.1)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init_conv_(m)
        for norm in self.norms():
            init_norm_(norm, gamma_init if norm is self.last_norm else 1.0)


class Conv1x1Branch(Branch):
    branch_type = '1x1'

    def __init__(self, spec: ConvSpec, norm_factory: NormFactory):
        super().__init__(spec, norm_factory)
        self.crop = min(T.centred_padding(spec.padding, spec.dilation, spec.kernel_size, 1), 0)
        pad = max(T.centred_padding(spec.padding, spec.dilation, spec.kernel_size, 1), 0)
        self.conv = nn.Conv2d(spec.in_channels, spec.out_channels, 1, spec.stride, pad,
                              groups=spec.groups, bias=False)
        self.norm = norm_factory(spec.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(T.pad_or_crop(x, self.crop, self.crop)))

    def equivalent_kernel(self) -> T.KernelBias:
        kernel, bias = T.fuse_bn(self.conv.weight, None, self.norm)
        return T.pad_to_kernel(kernel, self.spec.kernel_size), bias


class AsymmetricBranch(Branch):
    """1×K (``vertical=False``) or K×1 conv centred in the K×K conv."""

    vertical = False

    def __init__(self, spec: ConvSpec, norm_factory: NormFactory):
        super().__init__(spec, norm_factory)
        k, d, p = spec.kernel_size, spec.dilation, spec.padding
        short = T.centred_padding(p, d, k, 1)
        self.crop = min(short, 0)
        size, pad = ((k, 1), (p, max(short, 0))) if self.vertical else ((1, k), (max(short, 0), p))
        self.conv = nn.Conv2d(spec.in_channels, spec.out_channels, size, spec.stride, pad, dilation=d,
                              groups=spec.groups, bias=False)
        self.norm = norm_factory(spec.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.crop:
            x = T.pad_or_crop(x, 0, self.crop) if self.vertical else T.pad_or_crop(x, self.crop, 0)
        return self.norm(self.conv(x))

    def equivalent_kernel(self) -> T.KernelBias:
        kernel, bias = T.fuse_bn(self.conv.weight, None, self.norm)
        return T.pad_to_kernel(kernel, self.spec.kernel_size), bias


class Conv1xKBranch(AsymmetricBranch):
    branch_type = '1xk'
    vertical = False


class ConvKx1Branch(AsymmetricBranch):
    branch_type = 'kx1'
    vertical = True


class ResidualBranch(Branch):
    branch_type = 'residual'

    def __init__(self, spec: ConvSpec, norm_factory: NormFactory):
        super().__init__(spec, norm_factory)
        if spec.allows('residual'):
            raise UnsupportedConvError(spec.allows('residual'))
        self.shift = T.centred_padding(spec.padding, spec.dilation, spec.kernel_size, 1)
        self.norm = norm_factory(spec.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(T.pad_or_crop(x, self.shift, self.shift))

    def equivalent_kernel(self) -> T.KernelBias:
        ref = self.norm.running_mean
        kernel = T.identity_kernel(self.spec.out_channels, self.spec.groups, self.spec.kernel_size,
                                   dtype=ref.dtype, device=ref.device)
        return T.fuse_bn(kernel, None, self.norm)


class Conv1x1KxKBranch(Branch):
    """1×1 – BN – (pad with BN(0)) – K×K – BN; the K×K conv (``kxk``) is growable."""

    branch_type = '1x1_kxk'
    growable = ('kxk',)

    @classmethod
    def slot_specs(cls, spec: ConvSpec) -> Dict[str, ConvSpec]:
        # the middle channels equal the input channels; the K×K pads via constant_pad
        return {'kxk': replace(spec, padding=0)}

    def __init__(self, spec: ConvSpec, norm_factory: NormFactory):
        super().__init__(spec, norm_factory)
        mid = spec.in_channels
        self.conv1 = nn.Conv2d(spec.in_channels, mid, 1, groups=spec.groups, bias=False)
        self.norm1 = norm_factory(mid)
        self.kxk = nn.Conv2d(mid, spec.out_channels, spec.kernel_size, spec.stride, 0, spec.dilation,
                             groups=spec.groups, bias=False)
        self.norm = norm_factory(spec.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(self.conv1(x))
        zero_response = T.bn_scale_shift(self.norm1)[1].detach()
        return self.norm(self.kxk(T.constant_pad(y, self.spec.padding, zero_response)))

    def equivalent_kernel(self) -> T.KernelBias:
        first = T.fuse_bn(self.conv1.weight, None, self.norm1)
        second = T.fuse_bn(*kernel_of(self.kxk), self.norm)
        return T.merge_1x1_kxk(first, second, self.spec.groups)


class Conv1x1AvgBranch(Branch):
    """1×1 – BN – (pad with BN(0)) – K×K average – BN."""

    branch_type = '1x1_avg'

    def __init__(self, spec: ConvSpec, norm_factory: NormFactory):
        super().__init__(spec, norm_factory)
        self.conv = nn.Conv2d(spec.in_channels, spec.out_channels, 1, groups=spec.groups, bias=False)
        self.norm1 = norm_factory(spec.out_channels)
        self.norm = norm_factory(spec.out_channels)

    def average(self, y: Tensor) -> Tensor:
        """K×K average of the (already padded) ``y``, dilated like the conv. On CPU, at stride 1 or for
        K > 3, as a depthwise conv with a constant ``1/K²`` kernel: the same average up to rounding, and
        1.5-3x faster than ``avg_pool2d`` forward + backward on ResNet feature maps there (not for 3×3
        stride 2: ``training_cost.py --avg-shapes``, docs/benchmarks.md). Pooling while tracing, so FLOP
        counts (conv MACs, pooling not counted) do not depend on the device."""
        k, s, d = self.spec.kernel_size, self.spec.stride, self.spec.dilation
        if d == 1 and (y.device.type != 'cpu' or (s > 1 and k <= 3) or torch.jit.is_tracing()):
            return F.avg_pool2d(y, k, s)
        kernel = T.avg_kernel(y.shape[1], k, dtype=y.dtype, device=y.device)
        return F.conv2d(y, kernel, None, s, 0, d, groups=y.shape[1])

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(self.conv(x))
        zero_response = T.bn_scale_shift(self.norm1)[1].detach()
        return self.norm(self.average(T.constant_pad(y, self.spec.padding, zero_response)))

    def equivalent_kernel(self) -> T.KernelBias:
        first = T.fuse_bn(self.conv.weight, None, self.norm1)
        ref = first[0]
        avg = T.avg_kernel(self.spec.out_channels, self.spec.kernel_size, dtype=ref.dtype, device=ref.device)
        second = T.fuse_bn(avg, None, self.norm)
        return T.merge_1x1_depthwise(first, second)


BRANCH_CLASSES: Dict[str, type] = {
    cls.branch_type: cls
    for cls in (Conv1x1KxKBranch, Conv1x1AvgBranch, Conv1x1Branch, Conv1xKBranch, ConvKx1Branch, ResidualBranch)
}


def build_branch(branch_type: str, spec: ConvSpec, norm_factory: NormFactory) -> Branch:
    reason = spec.allows(branch_type)
    if reason:
        raise UnsupportedConvError(reason)
    return BRANCH_CLASSES[branch_type](spec, norm_factory)


def default_norm_factory(num_features: int) -> nn.Module:
    return nn.BatchNorm2d(num_features)


def branch_macs(branch_type: str, spec: ConvSpec, positions_in: int, positions_out: int) -> int:
    """Conv multiply-accumulates of one ``branch_type`` branch on the K×K conv ``spec`` for one input with
    ``positions_in`` (H·W) positions in and ``positions_out`` out: every conv's ``C_out · C_in/groups · kh · kw``
    per output position, as :func:`mmdyrep.models.complexity.count` counts them (BN, pooling, additions
    and the residual's identity are not counted; the 1×1–AVG average is counted where it is a conv even
    when traced: dilation > 1)."""
    ci, co, k, g = spec.in_channels, spec.out_channels, spec.kernel_size, spec.groups
    if branch_type == '1x1_kxk':  # 1×1 (C_in -> C_in, stride 1) before the K×K
        return ci * ci // g * positions_in + co * ci // g * k * k * positions_out
    if branch_type == '1x1_avg':  # 1×1 (stride 1) before the average; a dilated average is a depthwise conv
        return co * ci // g * positions_in + (co * k * k * positions_out if spec.dilation > 1 else 0)
    if branch_type == '1x1':
        return co * ci // g * positions_out
    if branch_type in ('1xk', 'kx1'):
        return co * ci // g * k * positions_out
    if branch_type == 'residual':
        return 0
    raise UnsupportedConvError(spec.allows(branch_type) or f"no MAC count for branch type '{branch_type}'")


__all__ = [
    'BRANCH_TYPES', 'AsymmetricBranch', 'Branch', 'ConvSpec', 'DyRepError', 'UnsupportedConvError', 'branch_macs',
    'build_branch', 'kernel_of', 'default_norm_factory'
]
