"""tools/train.py and tools/test.py on the tiny configs of the three toolboxes."""
import pickle

from .helpers import (ONE_EPOCH, TINY_CLS, TINY_DET, TINY_SEG, TOOLS, log_files, output, run_tool, updates)


def test_train_classifier(cls_run):
    """mmpretrain: 3 epochs, checkpoints, logs and two DyRep updates."""
    work_dir = cls_run['work_dir']
    assert (work_dir / 'epoch_3.pth').is_file() and (work_dir / 'last_checkpoint').is_file()
    assert log_files(work_dir)
    grown = updates(work_dir)
    assert [r['epoch'] for r in grown] == [1, 2]
    assert 'accuracy/top1' in output(cls_run['proc'])


def test_train_detector_one_epoch(tmp_path, coco_env):
    """mmdet: one short epoch of Faster R-CNN R50-FPN with a DyRep update, then COCO eval."""
    work_dir = tmp_path / 'det'
    proc = run_tool([TOOLS / 'train.py', TINY_DET, '--work-dir', work_dir, '--cfg-options'] + ONE_EPOCH,
                    env=coco_env)
    assert (work_dir / 'epoch_1.pth').is_file()
    assert log_files(work_dir)
    assert len(updates(work_dir)) == 1
    assert 'Epoch(val)' in output(proc)  # COCO eval ran (2 iterations learn too little for a score)


def test_train_segmentor_few_iters(tmp_path, cityscapes_env):
    """mmseg: a few iterations of PSPNet (IterBasedTrainLoop: the hook counts iterations), with
    mmseg's SyncBN as in the real Cityscapes configs: on a CPU tools/train.py runs it as BN."""
    work_dir = tmp_path / 'seg'
    options = ['train_cfg.max_iters=4', 'train_cfg.val_interval=4', 'param_scheduler.0.end=4',
               'custom_hooks.0.interval=2', 'custom_hooks.0.end=4', 'default_hooks.checkpoint.interval=2']
    options += [f'model.{part}.norm_cfg.type=SyncBN' for part in ('backbone', 'decode_head', 'auxiliary_head')]
    proc = run_tool([TOOLS / 'train.py', TINY_SEG, '--work-dir', work_dir, '--cfg-options'] + options,
                    env=cityscapes_env)
    assert (work_dir / 'iter_2.pth').is_file() and (work_dir / 'iter_4.pth').is_file()
    assert log_files(work_dir)
    assert [r['iter'] for r in updates(work_dir)] == [2, 4]
    assert 'mIoU' in output(proc)
    import torch
    if not torch.cuda.is_available():
        assert 'SyncBN norms of this config run as BN' in output(proc)


def test_test_evaluates_an_evolved_checkpoint(cls_run, tmp_path):
    out = tmp_path / 'predictions.pkl'
    proc = run_tool([TOOLS / 'test.py', TINY_CLS, cls_run['checkpoint'], '--work-dir', tmp_path / 'test', '--out',
                     out], env=cls_run['env'])
    assert 'accuracy/top1' in output(proc)
    assert 'DyRepHook left out' in output(proc)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 8  # 2 val images per class, 4 classes


def test_resume_continues_from_the_last_checkpoint(cls_run, tmp_path):
    """--resume (torch >= 2.6 refuses mmengine's checkpoints unless mmdyrep.engine allow-lists them)."""
    import shutil
    work_dir = tmp_path / 'resume'
    shutil.copytree(cls_run['work_dir'], work_dir)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_3.pth'))
    proc = run_tool([TOOLS / 'train.py', TINY_CLS, '--work-dir', work_dir, '--resume', '--cfg-options',
                     'train_cfg.max_epochs=4'], env=cls_run['env'])
    assert 'resumed' in output(proc).lower()
    assert (work_dir / 'epoch_4.pth').is_file()


def test_clear_errors(tmp_path):
    missing = run_tool([TOOLS / 'train.py', tmp_path / 'nope.py'], check=False)
    assert missing.returncode == 1 and 'config file not found' in missing.stderr
    config = tmp_path / 'other.py'
    config.write_text("default_scope = 'mmocr'\nmodel = dict(type='X')\n")
    scope = run_tool([TOOLS / 'train.py', config], check=False)
    assert scope.returncode == 1 and "default_scope is 'mmocr'" in scope.stderr
    checkpoint = run_tool([TOOLS / 'test.py', TINY_CLS, tmp_path / 'nope.pth'], check=False)
    assert checkpoint.returncode == 1 and 'checkpoint not found' in checkpoint.stderr
    launcher = run_tool([TOOLS / 'train.py', TINY_CLS, '--launcher', 'pytorch'], check=False)
    assert launcher.returncode != 0
    import torch
    if not torch.cuda.is_available():  # CPU: tools/train.py creates the gloo group from torchrun's env
        assert "torchrun's environment" in launcher.stderr
