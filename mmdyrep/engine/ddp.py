"""The distributed side of DyRep: a DDP wrapper that also runs on CPU (gloo), and the collectives an
update needs (through ``mmengine.dist``, so they are no-ops in a single process).

DDP that also runs on CPU, through mmengine's ``model_wrapper_cfg``:

mmengine's ``Runner.wrap_model`` always passes ``device_ids=[LOCAL_RANK]`` to a
DistributedDataParallel subclass, which is invalid for a CPU module. This wrapper drops
``device_ids``/``output_device`` when the module lives on the CPU and is otherwise
mmengine's ``MMDistributedDataParallel``::

    model_wrapper_cfg = dict(type='CPUCompatibleDDP', broadcast_buffers=False)
"""
import hashlib
import json
from typing import List, Sequence

import torch
from mmengine import dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

from mmdyrep.core import extract_structure


@MODEL_WRAPPERS.register_module()
class CPUCompatibleDDP(MMDistributedDataParallel):

    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs):
        first = next(module.parameters(), None)
        if first is not None and first.device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module, detect_anomalous_params=detect_anomalous_params, **kwargs)


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over all processes, in place (the scores, reduced once per update)."""
    dist.all_reduce(tensor, op='sum')
    return tensor


def broadcast_branches(branches: Sequence[nn.Module]) -> None:
    """Rank 0's initial weights and buffers for new branches, on every rank (before BN calibration)."""
    for branch in branches:
        for t in list(branch.parameters()) + list(branch.buffers()):
            dist.broadcast(t.data, src=0)


def average_norm_statistics(norms: Sequence[nn.Module]) -> None:
    """The calibrated running statistics of ``norms`` averaged over ranks."""
    for norm in norms:
        if getattr(norm, 'running_mean', None) is not None:
            dist.all_reduce(norm.running_mean, op='mean')
            dist.all_reduce(norm.running_var, op='mean')


def fingerprint(model: nn.Module) -> str:
    """Structure, parameter count and a checksum of the parameters of ``model``: equal on every rank
    after an update, or something went wrong."""
    structure = json.dumps(extract_structure(model), sort_keys=True)
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
    return hashlib.sha1(f'{structure}|{params}|{checksum!r}'.encode()).hexdigest()[:16]


def rank_fingerprints(model: nn.Module) -> List[str]:
    """:func:`fingerprint` of ``model`` on every rank (one collective)."""
    return dist.all_gather_object(fingerprint(model))
