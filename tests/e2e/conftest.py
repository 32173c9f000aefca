"""Fixtures of the end-to-end tests: small synthetic datasets and the training runs that several
tests share. Each is made once per test run, by whichever pytest-xdist worker asks first
(:func:`made_once`), so that the classifier run several test files read is not trained once per worker."""
import json
import os
import shutil
from pathlib import Path
from typing import Tuple

import pytest
from filelock import FileLock

from .helpers import TINY_CLS, TOOLS, output, run_tool


def shared_root(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this run shares: the parent of the workers' own base
    folders (with xdist it holds only this run's), or the run's base folder without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def made_once(tmp_path_factory, name: str, make) -> Tuple[Path, dict]:
    """``(folder, make(folder))``, with ``make`` run once per test run (in the shared ``folder`` named
    ``name``, under a file lock) by whichever worker asks first; the others wait and read its JSON-able
    result. A ``make`` that fails leaves no result: the next worker to ask tries again (and fails alike)."""
    root = shared_root(tmp_path_factory)
    folder, result = root / name, root / f'{name}.json'
    with FileLock(str(root / f'{name}.lock')):
        if not result.exists():
            if folder.exists():  # a failed attempt's leftovers
                shutil.rmtree(folder)
            folder.mkdir()
            result.write_text(json.dumps(make(folder)))
    return folder, json.loads(result.read_text())


# ---------------------------------------------------------------------------------- data
@pytest.fixture(scope='session')
def coco_env(tmp_path_factory):
    from mmdyrep.datasets import make_coco
    return made_once(tmp_path_factory, 'coco',
                     lambda d: {'MMDYREP_COCO_ROOT': make_coco(d, num_train=4, num_val=2)['root']})[1]


@pytest.fixture(scope='session')
def cityscapes_env(tmp_path_factory):
    from mmdyrep.datasets import make_cityscapes
    return made_once(tmp_path_factory, 'cityscapes',
                     lambda d: {'MMDYREP_CITYSCAPES_ROOT': make_cityscapes(d, num_train=4, num_val=2)['root']})[1]


@pytest.fixture(scope='session')
def imagenet_env(tmp_path_factory):
    from mmdyrep.datasets import make_imagenet
    return made_once(tmp_path_factory, 'imagenet', lambda d: {
        'MMDYREP_IMAGENET_ROOT': make_imagenet(d, num_train_per_class=8, num_val_per_class=2)['root']})[1]


# --------------------------------------------------------------------------- training runs
@pytest.fixture(scope='session')
def cls_run(tmp_path_factory, imagenet_env):
    """The tiny mmpretrain config trained by tools/train.py (3 epochs, DyRep updates at 1, 2); read only."""
    train = lambda work_dir: {'output': output(  # noqa: E731
        run_tool([TOOLS / 'train.py', TINY_CLS, '--work-dir', work_dir], env=imagenet_env))}
    work_dir, run = made_once(tmp_path_factory, 'cls_run', train)
    return dict(work_dir=work_dir, output=run['output'], env=imagenet_env, checkpoint=work_dir / 'epoch_3.pth')


@pytest.fixture
def copy_of(tmp_path):
    def copy(path):
        dst = tmp_path / Path(path).name
        shutil.copy(path, dst)
        return dst

    return copy
