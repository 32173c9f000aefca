"""Algorithm 1 line 4 in an mmengine run: score every candidate at each optimizer step, from the
gradients as the optimizer sees them (accumulated, clipped, AMP-unscaled), through the public
``torch.optim.Optimizer.register_step_pre_hook``. No collective here."""
from typing import Callable, Optional

import torch
from torch.utils.hooks import RemovableHandle

from mmdyrep.core import Evolver


def pending_unscale(wrapper) -> Optional[torch.Tensor]:
    """``1 / loss scale`` when the optimizer's gradients are still scaled at its step, else ``None``.

    mmengine's AmpOptimWrapper unscales them (``loss_scaler.step``) before the optimizer steps; a
    wrapper that holds a GradScaler and steps the optimizer directly does not. GradScaler keeps which
    optimizers it has unscaled in ``_per_optimizer_states`` (no public accessor)."""
    scaler = getattr(wrapper, 'loss_scaler', None)
    if scaler is None or not scaler.is_enabled():
        return None
    from torch.amp.grad_scaler import OptState
    if scaler._per_optimizer_states[id(wrapper.optimizer)]['stage'] is OptState.UNSCALED:
        return None
    return 1.0 / scaler._scale if isinstance(scaler._scale, torch.Tensor) else torch.tensor(1.0 / scaler.get_scale())


def score_at_each_step(wrapper, evolver: Evolver, active: Callable[[], bool]) -> RemovableHandle:
    """Register a step pre-hook on ``wrapper``'s torch optimizer that records the scores of ``evolver``
    while ``active()`` (a step AMP skips never reaches the optimizer, so it is not scored). Remove the
    returned handle to stop."""

    def record(optimizer, args, kwargs):
        if active():
            evolver.record(grad_scale=pending_unscale(wrapper))

    return wrapper.optimizer.register_step_pre_hook(record)


__all__ = ['pending_unscale', 'score_at_each_step']
