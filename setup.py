"""Install mmdyrep: ``pip install -e .[mmdet]`` (or ``[mmseg]``, ``[mmpretrain]``, ``[all]``) into an
OpenMMLab environment, or ``bash tools/install.sh`` for a fresh one (it builds mmcv 2.1.0 with
compiled ops first and pins the tested stack, tools/constraints.txt)."""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    namespace = {}
    with open(osp.join(HERE, 'mmdyrep', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


TOOLBOXES = {
    'mmdet': ['mmdet>=3.0.0,<3.4.0'],
    'mmseg': ['mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex'],  # mmseg 1.2 imports ftfy, regex
    'mmpretrain': ['mmpretrain>=1.0.0,<1.3.0'],
}
EXTRAS = dict(TOOLBOXES)
EXTRAS['all'] = sorted({r for reqs in TOOLBOXES.values() for r in reqs})
EXTRAS['tests'] = EXTRAS['all'] + ['torchvision', 'pytest', 'pytest-timeout', 'pytest-xdist', 'filelock']

setup(
    name='mmdyrep',
    version=read_version(),
    description='DyRep: Bootstrapping Training with Dynamic Re-parameterization, '
    'as an OpenMMLab plugin (mmdet, mmsegmentation, mmpretrain)',
    long_description=open(osp.join(HERE, 'README.md')).read() if osp.exists(osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmdyrep', 'mmdyrep.*']),
    python_requires='>=3.9',
    # What mmdyrep itself imports, as ranges: a plugin fits into the user's OpenMMLab environment
    # (a CUDA torch, a prebuilt mmcv) instead of replacing it. The toolboxes are extras. The exact
    # stack the tests run on is tools/constraints.txt (tools/install.sh uses it).
    install_requires=[
        'torch>=2.1',
        'mmengine>=0.10.0,<1.0.0',
        'mmcv>=2.0.0,<2.2.0',  # the bound mmdet 3.x and mmseg 1.x assert at import
    ],
    extras_require=EXTRAS,
    license='Apache-2.0',
)
