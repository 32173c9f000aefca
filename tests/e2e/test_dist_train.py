"""tools/dist_train.sh and tools/dist_test.sh: 2 processes with torchrun on this (CPU) machine,
gloo + CPU-capable DDP."""
from .helpers import TINY_CLS, TOOLS, free_port, history, log_files, output, run_tool, updates


def test_dist_train_two_cpu_processes(tmp_path, imagenet_env):
    work_dir = tmp_path / 'dist'
    env = dict(imagenet_env, PORT=str(free_port()), OMP_NUM_THREADS='1')
    proc = run_tool([TOOLS / 'dist_train.sh', TINY_CLS, 2, '--work-dir', work_dir], env=env)
    text = output(proc)
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
                    env=dict(env, PORT=str(free_port())))
    text = output(proc)
    assert 'Distributed launcher: pytorch' in text
    assert 'accuracy/top1' in text
