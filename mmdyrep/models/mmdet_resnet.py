"""Registers DyRepResNet, DyRepResNetV1c and DyRepResNetV1d in mmdet's MODELS on import."""
from .toolboxes import register

_classes = register('mmdet')
DyRepResNet = _classes['DyRepResNet']
DyRepResNetV1c = _classes['DyRepResNetV1c']
DyRepResNetV1d = _classes['DyRepResNetV1d']

__all__ = ['DyRepResNet', 'DyRepResNetV1c', 'DyRepResNetV1d']
