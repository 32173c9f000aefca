"""Bad input to tools/train.py, test.py, deploy.py and analysis/plot_structure.py: one line on stderr,
``error: <what, where, what to do>``, a non-zero exit, no traceback (unless ``--debug``), and nothing
written (the work dir / OUT is left as it was). Every case fails before a Runner is built, so no
training runs: the evolved checkpoints are built in this process (:func:`save_evolved_checkpoint`)."""
import pytest

from .helpers import TINY_CLS, TINY_CLS_R50, TINY_DET, TOOLS, output, run_tool, save_evolved_checkpoint, snapshot

PLOT = TOOLS / 'analysis' / 'plot_structure.py'


@pytest.fixture(scope='module')
def det_checkpoint(tmp_path_factory):
    """A Faster R-CNN (mmdet) DyRep checkpoint, layer2.2.conv2 evolved."""
    return save_evolved_checkpoint(TINY_DET, ['layer2.2.conv2'], tmp_path_factory.mktemp('det') / 'faster-rcnn.pth')


@pytest.fixture(scope='module')
def cls_checkpoint(tmp_path_factory):
    """The tiny ResNet-18 classifier (mmpretrain), two convs evolved."""
    return save_evolved_checkpoint(TINY_CLS, ['layer2.1.conv2', 'layer3.0.conv1'],
                                   tmp_path_factory.mktemp('cls') / 'r18.pth')


def refused(args, fragments, watch, env=None) -> str:
    """Run a tool that must refuse: one ``error: `` line on stderr holding every fragment, a non-zero exit,
    no traceback, and every path in ``watch`` as it was. Returns the line."""
    before = [snapshot(p) for p in watch]
    proc = run_tool(args, env=dict(env or {}, PYTHONWARNINGS=''), check=False)  # warnings shown, as to a user
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, output(proc)[-3000:]
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr[-3000:]
    assert 'Traceback' not in output(proc)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert [snapshot(p) for p in watch] == before
    return lines[0]


# ------------------------------------------------------------------------------ 1. arguments
def test_unknown_hook_argument_suggests_the_closest(imagenet_env, tmp_path):
    work = tmp_path / 'work'
    args = [TOOLS / 'train.py', TINY_CLS, '--work-dir', work, '--cfg-options', 'custom_hooks.0.intreval=1']
    refused(args, [f'config {TINY_CLS}: custom_hooks[0] DyRepHook', "unknown argument 'intreval'",
                   "(did you mean 'interval'?)"], [work], imagenet_env)
    assert not work.exists()
    # --debug: the same error with its traceback
    debug = run_tool(args + ['--debug'], env=imagenet_env, check=False)
    assert debug.returncode != 0 and 'Traceback' in debug.stderr and "'intreval'" in debug.stderr
    assert not work.exists()


@pytest.mark.parametrize('tool', ['deploy'])
def test_unknown_backbone_argument(tool, cls_checkpoint, imagenet_env, tmp_path):
    out = tmp_path / 'out.pth'
    options = ['--cfg-options', 'model.backbone.fast_forwad=False']
    if tool == 'test':
        args = [TOOLS / 'test.py', TINY_CLS, cls_checkpoint, '--work-dir', tmp_path / 'work'] + options
    else:
        args = [TOOLS / 'deploy.py', TINY_CLS, cls_checkpoint, out] + options
    watch = [out, out.with_suffix('.py'), tmp_path / 'work', cls_checkpoint]
    refused(args, ["model.backbone DyRepResNet got an unknown argument 'fast_forwad'",
                   "(did you mean 'fast_forward'?)"], watch, imagenet_env)


def test_hook_without_arguments(imagenet_env, tmp_path):
    work = tmp_path / 'work'
    refused([TOOLS / 'train.py', TINY_CLS, '--work-dir', work, '--cfg-options', 'custom_hooks.1.sede=0'],
            ["custom_hooks[1] RandomStateHook got an unknown argument 'sede' (it takes no arguments)"], [work],
            imagenet_env)


# ----------------------------------------------------------------------------- 2. checkpoints
@pytest.fixture
def bad_files(det_checkpoint, tmp_path):
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(det_checkpoint.read_bytes()[:20000])
    garbage = tmp_path / 'notes.pth'
    garbage.write_text('not a checkpoint\n')
    return dict(truncated=truncated, garbage=garbage, missing=tmp_path / 'missing.pth')


@pytest.mark.parametrize('tool,kind', [('test', 'truncated'), ('resume', 'garbage'), ('load_from', 'missing'),
                                       ('plot', 'truncated')])
def test_unreadable_checkpoint(tool, kind, bad_files, imagenet_env, tmp_path):
    bad, out = bad_files[kind], tmp_path / 'out'
    args = {
        'test': [TOOLS / 'test.py', TINY_CLS, bad, '--work-dir', out],
        'resume': [TOOLS / 'train.py', TINY_CLS, '--work-dir', out, '--resume', bad],
        'load_from': [TOOLS / 'train.py', TINY_CLS, '--work-dir', out, '--cfg-options', f'load_from={bad}'],
        'deploy': [TOOLS / 'deploy.py', TINY_CLS, bad, out / 'deployed.pth'],
        'plot': [PLOT, bad, '--out', out],
    }[tool]
    expected = {'missing': 'no such checkpoint file' if tool == 'plot' else 'checkpoint not found',
                'truncated': 'cannot read checkpoint', 'garbage': 'cannot read checkpoint'}[kind]
    refused(args, [expected, str(bad)], [out, bad], imagenet_env)
    assert not out.exists()


# ------------------------------------------------------------------- 3. a checkpoint of another model
@pytest.mark.parametrize('tool', ['resume', 'deploy'])
def test_checkpoint_of_another_toolbox(tool, det_checkpoint, imagenet_env, tmp_path):
    out = tmp_path / 'out'
    args = {
        'resume': [TOOLS / 'train.py', TINY_CLS, '--work-dir', out, '--resume', det_checkpoint],
        'load_from': [TOOLS / 'train.py', TINY_CLS, '--work-dir', out, '--cfg-options', f'load_from={det_checkpoint}'],
        'test': [TOOLS / 'test.py', TINY_CLS, det_checkpoint, '--work-dir', out],
        'deploy': [TOOLS / 'deploy.py', TINY_CLS, det_checkpoint, out / 'deployed.pth'],
    }[tool]
    refused(args, [f'{det_checkpoint} holds an mmdet model (roi_head, rpn_head) with a ResNet-50 backbone and 1 '
                   'evolved conv (layer2.2.conv2)', f'config {TINY_CLS} builds an mmpretrain model with a ResNet-18 '
                   'backbone', 'use the config the checkpoint was trained with'], [out, det_checkpoint], imagenet_env)


def test_checkpoint_of_another_depth(cls_checkpoint, imagenet_env, tmp_path):
    out = tmp_path / 'out'
    refused([TOOLS / 'test.py', TINY_CLS_R50, cls_checkpoint, '--work-dir', out],
            ['holds an mmpretrain model (head) with a ResNet-18 backbone and 2 evolved convs (layer2.1.conv2, '
             'layer3.0.conv1)', 'builds an mmpretrain model with a ResNet-50 backbone'], [out], imagenet_env)


# ------------------------------------------------------- 4. an evolved checkpoint, a config without mmdyrep
def test_evolved_checkpoint_with_a_stock_config(cls_checkpoint, imagenet_env, tmp_path):
    config = tmp_path / 'stock_r18.py'
    config.write_text(f"_base_ = ['{TINY_CLS}']\n"
                      "model = dict(backbone=dict(_delete_=True, type='ResNet', depth=18, out_indices=(3, )))\n"
                      "custom_imports = dict(imports=[], allow_failed_imports=False)\n"
                      "custom_hooks = []\n")
    out = tmp_path / 'out'
    refused([TOOLS / 'test.py', config, cls_checkpoint, '--work-dir', out],
            [f'checkpoint {cls_checkpoint} holds an evolved DyRep backbone (2 evolved convs: layer2.1.conv2, '
             "layer3.0.conv1), but the backbone of config", "is 'ResNet', not a DyRep type", 'tools/deploy.py'],
            [out], imagenet_env)


def test_dyrep_config_without_mmdyrep_imports(cls_checkpoint, imagenet_env, tmp_path):
    config = tmp_path / 'no_imports.py'
    config.write_text(f"_base_ = ['{TINY_CLS}']\ncustom_imports = dict(imports=['mmdyrep.engine'])\n")
    out = tmp_path / 'out'
    refused([TOOLS / 'test.py', config, cls_checkpoint, '--work-dir', out],
            ["model.backbone.type is 'DyRepResNet', which is not registered in mmpretrain",
             "custom_imports = dict(imports=['mmdyrep.models.mmpretrain_resnet', 'mmdyrep.engine'])"], [out],
            imagenet_env)


# ---------------------------------------------------------------------------------- 5. data
def test_missing_data_root_train(tmp_path):
    work, missing = tmp_path / 'work', tmp_path / 'no-imagenet'
    refused([TOOLS / 'train.py', TINY_CLS, '--work-dir', work],
            [f'train_dataloader.dataset.data_root does not exist: {missing} (from $MMDYREP_IMAGENET_ROOT)'], [work],
            {'MMDYREP_IMAGENET_ROOT': str(missing)})


def test_missing_annotations_test(det_checkpoint, tmp_path):
    """The data root is there, its annotation file is not (the detector's checkpoint fits its config)."""
    root = tmp_path / 'coco'
    root.mkdir()
    work = tmp_path / 'work'
    refused([TOOLS / 'test.py', TINY_DET, det_checkpoint, '--work-dir', work],
            ['test_dataloader.dataset.ann_file does not exist', str(root)], [work, root],
            {'MMDYREP_COCO_ROOT': str(root)})


# -------------------------------------------------------------------------------- 6. resume
def test_resume_without_last_checkpoint(imagenet_env, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'epoch_1.pth').write_bytes(b'x')
    (work / 'notes.txt').write_text('kept\n')
    refused([TOOLS / 'train.py', TINY_CLS, '--work-dir', work, '--resume'],
            [f'--resume: no checkpoint to resume from in {work}: it has no last_checkpoint file',
             f'--resume {work / "epoch_1.pth"}'], [work], imagenet_env)


def test_resume_without_work_dir(imagenet_env, tmp_path):
    work = tmp_path / 'work'
    refused([TOOLS / 'train.py', TINY_CLS, '--work-dir', work, '--resume'],
            [f'the work dir {work} does not exist', '--resume PATH'], [work], imagenet_env)
