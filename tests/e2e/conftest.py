"""Fixtures of the end-to-end tests: small synthetic datasets and the training runs that several
tests share (session scoped, so each runs once)."""
import shutil
from pathlib import Path

import pytest

from .helpers import TINY_CLS, TOOLS, run_tool


# ---------------------------------------------------------------------------------- data
@pytest.fixture(scope='session')
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp('synthetic')


@pytest.fixture(scope='session')
def coco_env(data_root):
    from mmdyrep.datasets import make_coco
    info = make_coco(data_root / 'coco', num_train=4, num_val=2)
    return {'MMDYREP_COCO_ROOT': info['root']}


@pytest.fixture(scope='session')
def cityscapes_env(data_root):
    from mmdyrep.datasets import make_cityscapes
    info = make_cityscapes(data_root / 'cityscapes', num_train=4, num_val=2)
    return {'MMDYREP_CITYSCAPES_ROOT': info['root']}


@pytest.fixture(scope='session')
def imagenet_env(data_root):
    from mmdyrep.datasets import make_imagenet
    info = make_imagenet(data_root / 'imagenet', num_train_per_class=8, num_val_per_class=2)
    return {'MMDYREP_IMAGENET_ROOT': info['root']}


# --------------------------------------------------------------------------- training runs
@pytest.fixture(scope='session')
def cls_run(tmp_path_factory, imagenet_env):
    """The tiny mmpretrain config trained by tools/train.py (3 epochs, DyRep updates at 1, 2)."""
    work_dir = tmp_path_factory.mktemp('cls_run')
    proc = run_tool([TOOLS / 'train.py', TINY_CLS, '--work-dir', work_dir], env=imagenet_env)
    return dict(work_dir=work_dir, proc=proc, env=imagenet_env, checkpoint=work_dir / 'epoch_3.pth')


@pytest.fixture
def copy_of(tmp_path):
    def copy(path):
        dst = tmp_path / Path(path).name
        shutil.copy(path, dst)
        return dst

    return copy
