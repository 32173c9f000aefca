"""--resume continues as if never interrupted, with the shipped tiny configs as they are (random
augmentation included): runs killed with SIGKILL (test-only fault points, $MMDYREP_FAULT) and resumed
with tools/train.py take the same DyRep decisions and end with the weights of an uninterrupted run.
The 2-process case is in test_dist_train.py."""
import signal

import torch

from .helpers import TINY_CLS, TINY_SEG, TOOLS, history, log_files, output, run_tool, updates

#: the largest weight difference allowed between an uninterrupted and a resumed run (float32, same
#: machine and thread count: in practice they are bit-identical)
TOLERANCE = 1e-6


def assert_same_run(reference_dir, resumed_dir, checkpoint: str):
    import mmdyrep.engine  # noqa: F401  (allow-lists mmengine's checkpoint classes)
    ref = torch.load(reference_dir / checkpoint, map_location='cpu', weights_only=True)['state_dict']
    got = torch.load(resumed_dir / checkpoint, map_location='cpu', weights_only=True)['state_dict']
    assert got.keys() == ref.keys()  # the same structure
    worst = max((got[k].double() - ref[k].double()).abs().max().item() for k in ref if ref[k].numel())
    assert worst <= TOLERANCE, f'weights differ by up to {worst:g}'
    decisions = lambda work: [(r['iter'], r['grown'], r['cut']) for r in history(work)['records']]  # noqa: E731
    assert decisions(resumed_dir) == decisions(reference_dir)


def killed(proc) -> bool:
    return proc.returncode == -signal.SIGKILL


def test_classifier_killed_three_times_resumes_exactly(cls_run, tmp_path, imagenet_env):
    """The tiny classifier (4 iterations per epoch, DyRep updates after epochs 1 and 2, a checkpoint
    every epoch), killed mid-interval (iteration 6), right after update 2 (before its checkpoint), and
    while update 2 writes dyrep_history.json; each time resumed from epoch_1.pth."""
    work = tmp_path / 'killed'
    for fault in ('iter@6', 'epoch@2', 'history@2', None):
        args = [TOOLS / 'train.py', TINY_CLS, '--work-dir', work] + (['--resume'] if work.exists() else [])
        env = dict(imagenet_env, MMDYREP_FAULT=fault) if fault else imagenet_env
        proc = run_tool(args, env=env, check=fault is None)
        if fault:
            assert killed(proc), f'{fault}: exit code {proc.returncode}\n{output(proc)[-3000:]}'
            assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth'], fault
        if fault != 'iter@6':
            assert 'resumed' in output(proc).lower()
    assert_same_run(cls_run['work_dir'], work, 'epoch_3.pth')


def test_segmentor_killed_after_an_update_resumes_exactly(tmp_path, cityscapes_env):
    """The iteration-based tiny PSPNet (IterBasedTrainLoop: the hook counts iterations; updates at
    iterations 3 and 6, checkpoints at 4 and 8), with mmseg's SyncBN as in the real Cityscapes configs
    (on a CPU tools/train.py runs it as BN), killed right after the update at 6 and resumed from
    iter_4.pth: the loop replays 4 batches to skip them."""
    reference, work = tmp_path / 'reference', tmp_path / 'killed'
    options = ['--cfg-options'] + [f'model.{part}.norm_cfg.type=SyncBN'
                                   for part in ('backbone', 'decode_head', 'auxiliary_head')]
    proc = run_tool([TOOLS / 'train.py', TINY_SEG, '--work-dir', reference] + options, env=cityscapes_env)
    assert [r['iter'] for r in updates(reference)] == [3, 6]
    assert 'mIoU' in output(proc) and log_files(reference)
    if not torch.cuda.is_available():
        assert 'SyncBN norms of this config run as BN' in output(proc)
    proc = run_tool([TOOLS / 'train.py', TINY_SEG, '--work-dir', work] + options,
                    env=dict(cityscapes_env, MMDYREP_FAULT='iter@6'), check=False)
    assert killed(proc) and sorted(p.name for p in work.glob('*.pth')) == ['iter_4.pth']
    run_tool([TOOLS / 'train.py', TINY_SEG, '--work-dir', work, '--resume'] + options, env=cityscapes_env)
    assert_same_run(reference, work, 'iter_8.pth')
