"""Synthetic datasets in the real COCO / Cityscapes / ImageNet on-disk formats."""
from .synthetic import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, COCO_CLASSES, COLOUR_FAMILIES,
                        IMAGENET_CLASSES, MARKER_NAME, SHAPES, make_cityscapes, make_coco,
                        make_imagenet)

__all__ = [
    'make_coco', 'make_cityscapes', 'make_imagenet', 'COCO_CLASSES', 'IMAGENET_CLASSES',
    'CITYSCAPES_CLASSES', 'CITYSCAPES_PALETTE', 'COLOUR_FAMILIES', 'SHAPES', 'MARKER_NAME'
]
