"""tools/dist_train.sh and tools/dist_test.sh: 2 processes with torchrun on this (CPU) machine,
gloo + CPU-capable DDP; a 2-process run killed and resumed continues exactly."""
import pytest

from .helpers import TINY_CLS, TOOLS, free_port, history, log_files, output, run_tool, updates
from .test_exact_resume import assert_same_run


def dist_env(imagenet_env, **extra):
    return dict(imagenet_env, PORT=str(free_port()), OMP_NUM_THREADS='1', **extra)


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory, imagenet_env):
    """The tiny classifier trained by 2 processes (2 iterations per epoch, updates after epochs 1, 2)."""
    work_dir = tmp_path_factory.mktemp('dist') / 'dist'
    proc = run_tool([TOOLS / 'dist_train.sh', TINY_CLS, 2, '--work-dir', work_dir], env=dist_env(imagenet_env))
    return dict(work_dir=work_dir, proc=proc)


def test_dist_train_two_cpu_processes(dist_run, tmp_path, imagenet_env):
    work_dir, text = dist_run['work_dir'], output(dist_run['proc'])
    assert 'Distributed launcher: pytorch' in text
    import torch
    if not torch.cuda.is_available():
        assert 'CPU distributed: gloo process group of 2 processes' in text
    assert (work_dir / 'epoch_3.pth').is_file() and log_files(work_dir)
    # both ranks took the same decisions and hold the same weights: after each update the hook
    # compares a fingerprint of structure + parameter checksum across ranks (and stops if they differ)
    assert [r['epoch'] for r in updates(work_dir)] == [1, 2]
    assert text.count('2 ranks agree on structure and weights') == 2
    assert history(work_dir)['records'][-1]['structure']['blocks']
    # tools/dist_test.sh on the same checkpoint, 2 processes: the evolved model is evaluated
    proc = run_tool([TOOLS / 'dist_test.sh', TINY_CLS, work_dir / 'epoch_3.pth', 2, '--work-dir', tmp_path / 'test'],
                    env=dist_env(imagenet_env))
    text = output(proc)
    assert 'Distributed launcher: pytorch' in text
    assert 'accuracy/top1' in text


def test_dist_train_killed_and_resumed_continues_exactly(dist_run, tmp_path, imagenet_env):
    """Rank 0 killed with SIGKILL in epoch 2 (iteration 3; torchrun then stops rank 1), resumed by
    tools/dist_train.sh --resume: every rank restores its own random state from epoch_1.pth."""
    work = tmp_path / 'killed'
    proc = run_tool([TOOLS / 'dist_train.sh', TINY_CLS, 2, '--work-dir', work],
                    env=dist_env(imagenet_env, MMDYREP_FAULT='iter@3'), check=False)
    assert proc.returncode != 0 and sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth']
    proc = run_tool([TOOLS / 'dist_train.sh', TINY_CLS, 2, '--work-dir', work, '--resume'], env=dist_env(imagenet_env))
    assert 'resumed' in output(proc).lower()
    assert_same_run(dist_run['work_dir'], work, 'epoch_3.pth')


def test_close_distributed_destroys_the_group_once_the_run_is_done():
    """What tools/train.py and test.py call after the Runner: the default group is gone (a gloo worker may
    free its last collective's tensors during the pause after; see runner_setup.close_distributed); without
    a group it does nothing."""
    import torch
    import torch.distributed as dist

    from mmdyrep.cli.runner_setup import close_distributed
    close_distributed()
    assert not dist.is_initialized()
    dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1)
    dist.broadcast(torch.ones(3), 0)
    close_distributed(settle_s=0.01)
    assert not dist.is_initialized()
