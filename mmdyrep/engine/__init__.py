"""mmengine integration: DyRepHook, CPU-capable DDP wrapper, resume under torch >= 2.6.

Importing this package registers ``DyRepHook`` and ``RandomStateHook`` (mmengine's root HOOKS: every
toolbox sees them) and ``CPUCompatibleDDP`` (MODEL_WRAPPERS), and allow-lists the classes of mmengine runner
checkpoints for ``torch.load(weights_only=True)`` so that ``--resume`` works.
"""
from .compat import allow_mmengine_checkpoints
from .ddp import CPUCompatibleDDP
from .dyrep_hook import DyRepHook
from .optim import sync_optimizer
from .random_state import RandomStateHook

allow_mmengine_checkpoints()

__all__ = ['CPUCompatibleDDP', 'DyRepHook', 'RandomStateHook', 'allow_mmengine_checkpoints', 'sync_optimizer']
