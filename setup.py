"""Install mmdyrep. Use tools/install.sh: it builds mmcv 2.1.0 with compiled ops first."""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    namespace = {}
    with open(osp.join(HERE, 'mmdyrep', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmdyrep',
    version=read_version(),
    description='DyRep: Bootstrapping Training with Dynamic Re-parameterization, '
    'as an OpenMMLab plugin (mmdet, mmsegmentation, mmpretrain)',
    long_description=open(osp.join(HERE, 'README.md')).read() if osp.exists(osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmdyrep', 'mmdyrep.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch==2.14.1',
        'torchvision==0.29.1',
        'mmengine==0.10.7',
        # Built from the sdist with compiled ops by tools/install.sh.
        'mmcv==2.1.0',
        'mmdet==3.3.0',
        'mmsegmentation==1.2.2',
        'mmpretrain==1.2.0',
        # mmseg 1.2.2 imports these at `import mmseg.models`.
        'ftfy',
        'regex',
        'matplotlib',
        'pycocotools',
    ],
    extras_require={'tests': ['pytest', 'pytest-timeout']},
    license='Apache-2.0',
)
