"""mmdyrep: DyRep (dynamic re-parameterization, CVPR 2022) for OpenMMLab."""
from .version import __version__  # noqa: F401
