"""tools/train.py and tools/test.py on the tiny configs of the three toolboxes."""
import pickle

from .helpers import (ONE_EPOCH, TINY_CLS, TINY_DET, TOOLS, log_files, output, run_tool, updates)


def test_train_classifier(cls_run):
    """mmpretrain: 3 epochs, checkpoints, logs and two DyRep updates."""
    work_dir = cls_run['work_dir']
    assert (work_dir / 'epoch_3.pth').is_file() and (work_dir / 'last_checkpoint').is_file()
    assert log_files(work_dir)
    grown = updates(work_dir)
    assert [r['epoch'] for r in grown] == [1, 2]
    assert 'accuracy/top1' in cls_run['output']


def test_train_detector_one_epoch(tmp_path, coco_env):
    """mmdet: one short epoch of Faster R-CNN R50-FPN with a DyRep update, then COCO eval."""
    work_dir = tmp_path / 'det'
    proc = run_tool([TOOLS / 'train.py', TINY_DET, '--work-dir', work_dir, '--cfg-options'] + ONE_EPOCH,
                    env=coco_env)
    assert (work_dir / 'epoch_1.pth').is_file()
    assert log_files(work_dir)
    assert len(updates(work_dir)) == 1
    assert 'Epoch(val)' in output(proc)  # COCO eval ran (2 iterations learn too little for a score)


def test_test_evaluates_an_evolved_checkpoint(cls_run, tmp_path):
    out = tmp_path / 'predictions.pkl'
    proc = run_tool([TOOLS / 'test.py', TINY_CLS, cls_run['checkpoint'], '--work-dir', tmp_path / 'test', '--out',
                     out], env=cls_run['env'])
    assert 'accuracy/top1' in output(proc)
    assert 'DyRepHook left out' in output(proc)
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 8  # 2 val images per class, 4 classes


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
