"""The equivalences of structural re-parameterization (paper Sec. 3) as small pure functions.

Every function maps tensors to tensors and states the identity it preserves.
Throughout, a *K×K conv* is the one a DyRep block emulates: kernel ``K×K``
(K odd), stride ``s``, zero padding ``p``, dilation ``d`` and ``g`` groups.
A "kernel" has the usual ``[out, in // g, kh, kw]`` shape and a "bias" is a
``[out]`` vector (never ``None`` here: a missing bias is a zero vector).
"""
import contextlib
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

KernelBias = Tuple[Tensor, Tensor]


def relative_error(a: Tensor, b: Tensor) -> float:
    """How far ``a`` is from the reference ``b``: ``max |a - b| / max |b|`` (float32 or wider), the
    measure every exactness claim of this package states."""
    a, b = a.detach(), b.detach()
    if a.dtype not in (torch.float32, torch.float64):
        a, b = a.float(), b.float()
    return ((a - b.to(a)).abs().max() / b.to(a).abs().max().clamp_min(1e-30)).item()


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Inside, CUDA convolutions and matmuls compute in full float32 (TF32 off); the settings are restored."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


def rep_origin(origin: KernelBias, added: KernelBias) -> KernelBias:
    """Eq. 6 (Rep): the origin's kernel and bias after branches whose summed K×K kernel and bias are
    ``added`` joined it, ``F_ori - (F_1 + ... + F_n)``: the grown block computes what the origin did."""
    return origin[0] - added[0], origin[1] - added[1]


def dep_origin(origin: KernelBias, removed: KernelBias) -> KernelBias:
    """Eq. 10 (Dep): the origin's kernel and bias after absorbing a removed branch's, ``F_ori + F_j``:
    the block without that branch computes what it did with it."""
    return origin[0] + removed[0], origin[1] + removed[1]


def bn_scale_shift(bn: _BatchNorm) -> KernelBias:
    """Eval-mode BN as ``x * scale + shift`` per channel (Eq. 7 with running statistics)."""
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


def fuse_bn(kernel: Tensor, bias: Optional[Tensor], bn: _BatchNorm) -> KernelBias:
    """Eq. 8: ``bn(conv(x, kernel) + bias) == conv(x, F') + b'`` in eval mode."""
    scale, shift = bn_scale_shift(bn)
    if bias is None:
        bias = torch.zeros_like(scale)
    return kernel * scale.reshape(-1, 1, 1, 1), bias * scale + shift


def pad_to_kernel(kernel: Tensor, kernel_size: int) -> Tensor:
    """Zero-pad a ``kh×kw`` kernel (1×1, 1×K, K×1) centrally to ``K×K``.

    Holds when the small conv's padding is the K×K conv's padding minus
    ``d * (K - kh) // 2`` rows and ``d * (K - kw) // 2`` columns (see
    :func:`centred_padding`)."""
    kh, kw = kernel.shape[-2:]
    if (kernel_size - kh) % 2 or (kernel_size - kw) % 2 or kh > kernel_size or kw > kernel_size:
        raise ValueError(f'cannot centre a {kh}x{kw} kernel in {kernel_size}x{kernel_size}')
    top, left = (kernel_size - kh) // 2, (kernel_size - kw) // 2
    return torch.nn.functional.pad(kernel, [left, kernel_size - kw - left, top, kernel_size - kh - top])


def centred_padding(padding: int, dilation: int, kernel_size: int, small_size: int) -> int:
    """Padding (negative = crop) of a ``small_size`` conv centred in a K×K conv with ``padding``."""
    return padding - dilation * ((kernel_size - small_size) // 2)


def identity_kernel(channels: int, groups: int, kernel_size: int, *, dtype: torch.dtype,
                    device: torch.device) -> Tensor:
    """The residual connection as a K×K kernel: ``conv(x, I) == x`` (stride 1, centred padding)."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, kernel_size, kernel_size, dtype=dtype, device=device)
    centre = kernel_size // 2
    channel = torch.arange(channels, device=device)
    kernel[channel, channel % per_group, centre, centre] = 1
    return kernel


def avg_kernel(channels: int, kernel_size: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """K×K average pooling (zero padding counted) as a depthwise kernel ``[C, 1, K, K]``."""
    return torch.full((channels, 1, kernel_size, kernel_size), 1.0 / kernel_size**2, dtype=dtype,
                      device=device)


def merge_1x1_kxk(first: KernelBias, second: KernelBias, groups: int) -> KernelBias:
    """A 1×1 conv followed by a K×K conv, both with ``groups``, as one K×K conv.

    ``conv_kxk(const_pad(conv_1x1(x) + b1, b1) ) + b2 == conv(x, F) + b`` where the
    intermediate is padded with its own bias ``b1`` (what a zero input maps to), so the
    constant term stays constant up to the borders."""
    k1, b1 = first
    k2, b2 = second
    out_channels = k2.shape[0]
    mid_channels = k1.shape[0]
    k1 = k1.reshape(groups, mid_channels // groups, -1)  # [g, mid/g, in/g]
    k2g = k2.reshape(groups, out_channels // groups, mid_channels // groups, *k2.shape[-2:])
    kernel = torch.einsum('gomhw,gmi->goihw', k2g, k1).reshape(out_channels, -1, *k2.shape[-2:])
    b1g = b1.reshape(groups, 1, mid_channels // groups)
    bias = (k2g.sum(dim=(-2, -1)) * b1g).sum(-1).reshape(-1) + b2
    return kernel, bias


def merge_1x1_depthwise(first: KernelBias, second: KernelBias) -> KernelBias:
    """A 1×1 conv (any groups) followed by a depthwise K×K kernel ``[C, 1, K, K]`` as one conv.

    Used for 1×1–AVG (the average pooling is a fixed depthwise kernel)."""
    k1, b1 = first
    kd, bd = second
    kernel = k1 * kd.reshape(kd.shape[0], 1, *kd.shape[-2:])
    bias = bd + b1 * kd.sum(dim=(1, 2, 3))
    return kernel, bias


def fold_bias_into_bn(bias: Tensor, bn: _BatchNorm) -> None:
    """In place: ``bn(y + bias) == bn'(y)`` in eval mode, by shifting the running mean."""
    with torch.no_grad():
        bn.running_mean.sub_(bias.to(bn.running_mean))


def pad_or_crop(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """Zero-pad (positive) or crop (negative) ``x`` symmetrically by rows ``pad_h`` / cols ``pad_w``."""
    if pad_h == 0 and pad_w == 0:
        return x
    return torch.nn.functional.pad(x, [pad_w, pad_w, pad_h, pad_h])


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` ``[N, C, H, W]`` is laid out channels-last (NHWC) rather than contiguous (NCHW)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _ConstantPad(torch.autograd.Function):
    """``constant_pad`` in one pass: the border is filled, the interior copied once; the backward is
    a view of the gradient (and a border sum for ``value``), written in differentiable ops, so a
    double backward (GraSP) works too."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, pad: int) -> Tensor:
        n, c, h, w = x.shape
        out = torch.empty((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)
        v = value.detach().to(x.dtype).reshape(1, c, 1, 1)
        out[:, :, :pad] = v
        out[:, :, pad + h:] = v
        out[:, :, pad:pad + h, :pad] = v
        out[:, :, pad:pad + h, pad + w:] = v
        out[:, :, pad:pad + h, pad:pad + w] = x
        ctx.pad, ctx.size, ctx.value_dtype = pad, (h, w), value.dtype
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        p, (h, w) = ctx.pad, ctx.size
        inner = grad[:, :, p:p + h, p:p + w]
        grad_value = None
        if ctx.needs_input_grad[1]:
            grad_value = (grad.sum((0, 2, 3)) - inner.sum((0, 2, 3))).to(ctx.value_dtype)
        return (inner if ctx.needs_input_grad[0] else None), grad_value, None


def constant_pad(x: Tensor, pad: int, value: Tensor) -> Tensor:
    """Pad ``x`` ``[N, C, H, W]`` by ``pad`` on each side with a per-channel constant ``value`` ``[C]``.

    Equals ``F.pad(x - v, [pad] * 4) + v`` (``v = value`` as ``[1, C, 1, 1]``), gradients included,
    with one pass over ``x`` instead of four."""
    if pad == 0:
        return x
    return _ConstantPad.apply(x, value, pad)
