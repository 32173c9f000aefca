"""Build and register DyRepResNet classes for each toolbox's own ResNet.

``register('mmdet')`` (likewise ``'mmseg'``, ``'mmpretrain'``) registers ``DyRepResNet``,
``DyRepResNetV1c`` and ``DyRepResNetV1d`` in that toolbox's ``MODELS`` registry. The modules
``mmdyrep.models.mmdet_resnet`` etc. do it on import, for ``custom_imports`` in configs.
"""
import importlib
from typing import Dict

from mmdyrep.core import DyRepError
from .dyrep_resnet import DyRepResNetMixin

TOOLBOXES = {
    'mmdet': ('mmdet.models.backbones.resnet', 'mmdet.registry'),
    'mmseg': ('mmseg.models.backbones.resnet', 'mmseg.registry'),
    'mmpretrain': ('mmpretrain.models.backbones.resnet', 'mmpretrain.registry'),
}
#: the pip extra that installs each toolbox (setup.py)
EXTRA = {'mmdet': 'mmdet', 'mmseg': 'mmseg', 'mmpretrain': 'mmpretrain'}
PACKAGE = {'mmdet': 'mmdet', 'mmseg': 'mmsegmentation', 'mmpretrain': 'mmpretrain'}


class MissingToolboxError(ImportError):
    """An adapter was imported (``mmdyrep.models.mmdet_resnet``, a config's ``custom_imports``) in an
    environment without its toolbox."""


VARIANTS = {'DyRepResNet': {}, 'DyRepResNetV1c': dict(deep_stem=True, avg_down=False),
            'DyRepResNetV1d': dict(deep_stem=True, avg_down=True)}
_REGISTERED: Dict[str, Dict[str, type]] = {}


def _make_class(base: type, toolbox: str, name: str, fixed: dict) -> type:

    def __init__(self, depth, **kwargs):
        if depth not in base.arch_settings:
            raise DyRepError(f'{name}: unknown depth {depth!r}; {toolbox} ResNet supports '
                             f'{sorted(base.arch_settings)}')
        clash = set(fixed) & set(kwargs)
        if clash:
            raise DyRepError(f'{name} fixes {sorted(clash)}; use DyRepResNet to choose them')
        DyRepResNetMixin.__init__(self, depth, **fixed, **kwargs)

    doc = (f'{toolbox} ResNet with DyRep (see :class:`mmdyrep.models.DyRepResNetMixin`)'
           + (f'; fixes {fixed}.' if fixed else '.'))
    return type(name, (DyRepResNetMixin, base), {'__init__': __init__, '__doc__': doc,
                                                 '__module__': f'mmdyrep.models.{toolbox}_resnet',
                                                 '__qualname__': name, 'toolbox': toolbox})


def register(toolbox: str) -> Dict[str, type]:
    """Register the DyRepResNet variants in ``toolbox``'s MODELS (once); returns them by name."""
    if toolbox not in TOOLBOXES:
        raise DyRepError(f"unknown toolbox '{toolbox}' (choose from {', '.join(TOOLBOXES)})")
    if toolbox in _REGISTERED:
        return _REGISTERED[toolbox]
    module_name, registry_name = TOOLBOXES[toolbox]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != toolbox:  # the toolbox is there; something it imports is not: its own error says what
            raise
        raise MissingToolboxError(
            f"mmdyrep.models.{toolbox}_resnet needs {toolbox}, which is not installed in this environment "
            f"({PACKAGE[toolbox]}): pip install 'mmdyrep[{EXTRA[toolbox]}]' (or pip install {PACKAGE[toolbox]}; "
            f"the tested version is in tools/constraints.txt)", name=toolbox) from None
    base = module.ResNet
    registry = importlib.import_module(registry_name).MODELS
    classes = {}
    for name, fixed in VARIANTS.items():
        cls = _make_class(base, toolbox, name, fixed)
        registry.register_module(name=name, module=cls, force=True)
        classes[name] = cls
    _REGISTERED[toolbox] = classes
    return classes
