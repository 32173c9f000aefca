"""Exactness and training checks of the core on one device (CUDA on a GPU machine; CPU in the tests).

:func:`check_device` grows a torchvision ResNet everywhere the fixed Table-3 structure says
(:data:`mmdyrep.analysis.benchmark.TABLE3_CONVS`) plus the stem, and measures on ``device``, in float32
with TF32 off (TF32 rounds at about 1e-3, which would hide what is measured):

* ``grow``: Rep keeps the eval-mode output (BN calibration on 2 random batches first);
* ``fast_train``: in training mode, the fast forward (grouped BNs) against the per-branch forward:
  outputs and every gradient;
* ``fast_norm_eval``: the same with every BN in eval mode (mmdet's ``norm_eval=True``: one merged conv);
* ``channels_last``: the fast forward in training mode with model and input in ``torch.channels_last``
  memory format against the same in the default format: outputs and every gradient;
* ``cut``: Dep of half the branches keeps the eval output;
* ``deploy``: the deployed plain model against the evolved one, eval mode;
* ``bf16_steps``: a few SGD steps under bf16 autocast stay finite, fast and per-branch alike.

Each value is a relative error (max abs difference / max abs reference). Needs torch and torchvision.
"""
import copy
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from mmdyrep.core import cut_branches, deploy, full_fp32, grow, iter_blocks, relative_error
from mmdyrep.core.block import set_fast_forward
from .benchmark import TABLE3_CONVS, onednn_guard


def _grad_rel(ref: nn.Module, other: nn.Module) -> float:
    scale = max(p.grad.abs().max().item() for p in ref.parameters() if p.grad is not None)
    return max((pr.grad - po.grad).abs().max().item() / scale for pr, po in zip(ref.parameters(), other.parameters())
               if pr.grad is not None)


def check_device(device: str = 'cuda', arch: str = 'resnet18', batch: int = 4, size: int = 96,
                 steps: int = 3) -> Dict[str, float]:
    """See the module docstring; returns ``{check: relative error}`` (``bf16_steps``: the final loss
    difference between the fast and the per-branch model, relative)."""
    import torchvision
    with full_fp32():
        g = torch.Generator().manual_seed(0)
        batches = [torch.randn(batch, 3, size, size, generator=g).to(device) for _ in range(3)]
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(num_classes=10).to(device)
        model.train()
        with torch.no_grad():  # BN statistics of the data, as a trained model has
            for x in batches[:2]:
                model(x)
        model.eval()
        x = batches[2]
        with torch.no_grad():
            before = model(x)
        grow(model, ['conv1', *TABLE3_CONVS[arch]], calibrate=lambda m: [m(b) for b in batches[:2]])
        model.eval()
        out = {}
        with torch.no_grad():
            out['grow'] = relative_error(model(x), before)

        # training mode: fast (grouped) against per branch, then norm_eval (merged)
        for key, norm_eval in (('fast_train', False), ('fast_norm_eval', True)):
            ref, fast = copy.deepcopy(model), copy.deepcopy(model)
            set_fast_forward(ref, False)
            set_fast_forward(fast, True)
            for m in (ref, fast):
                m.train()
                if norm_eval:
                    for bn in m.modules():
                        if isinstance(bn, nn.BatchNorm2d):
                            bn.eval()
            yr, yf = ref(x), fast(x)
            yr.square().mean().backward()
            yf.square().mean().backward()
            out[key] = max(relative_error(yf, yr), _grad_rel(ref, fast))

        # the fast forward in training mode, channels_last against the default memory format
        ref, nhwc = copy.deepcopy(model).train(), copy.deepcopy(model).train()
        set_fast_forward(ref, True)
        set_fast_forward(nhwc, True)
        nhwc = nhwc.to(memory_format=torch.channels_last)
        yr = ref(x)
        yr.square().mean().backward()
        with onednn_guard(device, True):
            yc = nhwc(x.to(memory_format=torch.channels_last))
            yc.square().mean().backward()
        out['channels_last'] = max(relative_error(yc, yr), _grad_rel(ref, nhwc))

        with torch.no_grad():
            evolved = model(x)
            for name, block in list(iter_blocks(model)):
                cut_branches(model, name, list(block.branches)[::2])
            out['cut'] = relative_error(model(x), evolved)
            evolved = model(x)
            plain = copy.deepcopy(model)
            deploy(plain)
            out['deploy'] = relative_error(plain(x), evolved)

        # bf16 autocast training, fast and per branch from the same weights and batches
        losses = {}
        for fast in (False, True):
            m = copy.deepcopy(model).train()
            set_fast_forward(m, fast)
            opt = torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9)
            target = torch.arange(batch, device=device) % 10
            for i in range(steps):
                with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                    loss = F.cross_entropy(m(batches[i % 3]), target)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            losses[fast] = loss.item()
        if not all(torch.isfinite(torch.tensor(v)) for v in losses.values()):
            out['bf16_steps'] = float('inf')
        else:
            out['bf16_steps'] = abs(losses[True] - losses[False]) / max(abs(losses[False]), 1e-12)
        return out


__all__ = ['check_device']
