"""mmdyrep as a plugin in the user's environment: the declared requirements leave the tested stack
alone, and an environment with mmpretrain but without mmdet / mmseg trains the tiny classifier
(through ``PYTHON=... tools/dist_train.sh``, the GPU-cluster path) and names the missing extra."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .helpers import ONE_EPOCH, REPO, TINY_CLS, output, run_tool

HIDDEN = ('mmdet', 'mmseg', 'mmsegmentation')


def test_pip_install_leaves_torch_alone(tmp_path):
    """``pip install -e .[all]`` into the tested environment (resolved offline: every requirement must
    already be satisfied) would install mmdyrep and nothing else: no torch, no mmcv replaced."""
    report = tmp_path / 'report.json'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--no-build-isolation',
                    '--quiet', '--report', str(report), '-e', f'{REPO}[all]'], check=True, timeout=600)
    installs = [item['metadata']['name'] for item in json.loads(report.read_text())['install']]
    assert installs == ['mmdyrep']


@pytest.fixture(scope='module')
def env_without_mmdet(tmp_path_factory):
    """A real virtual environment: the tested site-packages linked entry by entry, minus mmdet and
    mmseg (and their metadata). Nothing is patched inside Python."""
    root = tmp_path_factory.mktemp('env')
    subprocess.run([sys._base_executable, '-m', 'venv', '--without-pip', str(root)], check=True, timeout=300)
    python = root / 'bin' / 'python'
    target = Path(subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                 capture_output=True, text=True, check=True).stdout.strip())
    source = Path(sysconfig.get_paths()['purelib'])
    for entry in source.iterdir():
        if not entry.name.lower().startswith(HIDDEN):
            (target / entry.name).symlink_to(entry)
    return python


def test_an_environment_with_mmpretrain_only(env_without_mmdet, tmp_path):
    python = str(env_without_mmdet)
    probe = subprocess.run([python, '-c', 'import mmpretrain, mmcv, mmdyrep.engine, mmdyrep.models.mmpretrain_resnet; '
                            'import importlib.util as u; print(u.find_spec("mmdet"), u.find_spec("mmseg"))'],
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert probe.returncode == 0 and probe.stdout.split() == ['None', 'None'], probe.stderr
    # the adapter of a missing toolbox says which extra to install
    missing = subprocess.run([python, '-c', 'import mmdyrep.models.mmdet_resnet'], capture_output=True, text=True,
                             cwd=tmp_path, timeout=600)
    assert missing.returncode == 1
    assert "needs mmdet, which is not installed" in missing.stderr and "pip install 'mmdyrep[mmdet]'" in missing.stderr
    # the tiny classifier trains there through dist_train.sh with PYTHON= (one process)
    from mmdyrep.datasets import make_imagenet
    info = make_imagenet(tmp_path / 'imagenet', num_train_per_class=4, num_val_per_class=2)
    env = {'PYTHON': python, 'MMDYREP_IMAGENET_ROOT': info['root'], 'PORT': str(29500 + os.getpid() % 1000)}
    work = tmp_path / 'work'
    proc = run_tool(['tools/dist_train.sh', TINY_CLS, '1', '--work-dir', work, '--cfg-options', *ONE_EPOCH], env=env)
    assert (work / 'epoch_1.pth').exists() and (work / 'dyrep_history.json').exists(), output(proc)
