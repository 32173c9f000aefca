"""The quick start's quiet console (tools/quickstart.py): a real training run through its runner shows
training progress and the DyRep updates, and sends everything else (the config dump, library notes)
to the log file. The full quick start (minutes of detector training) is the README's main command."""
import importlib.util

from .helpers import ONE_EPOCH, TINY_CLS, TOOLS


def _quickstart():
    spec = importlib.util.spec_from_file_location('mmdyrep_quickstart', TOOLS / 'quickstart.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_console_line():
    qs = _quickstart()
    line = ('11/30 00:20:48 - mmengine - INFO - Epoch(train)  [2][ 5/16]  lr: 1.0000e-02  eta: 0:01:07  '
            'time: 1.3211  data_time: 0.0123  memory: 0  loss: 1.0921  loss_cls: 0.7110\n')
    assert qs.console_line(line) == '  train epoch 2 [5/16]  loss 1.0921  eta 0:01:07'
    assert qs.console_line('11/30 00:20:49 - mmengine - INFO - [DyRep] update 1: grew conv1\n') == \
        '  [DyRep] update 1: grew conv1'
    assert qs.CONSOLE.search(line) and not qs.CONSOLE.search('Config:\n') and not qs.CONSOLE.search(
        "/x/mmengine/utils/package_utils.py:17: UserWarning: pkg_resources is deprecated\n")


def test_quiet_training_run(tmp_path, imagenet_env, capsys):
    import os
    qs = _quickstart()
    log = tmp_path / 'quickstart.log'
    env = dict(os.environ, **imagenet_env)
    options = [o for o in ONE_EPOCH if not o.startswith('custom_hooks')] + ['train_cfg.max_epochs=2']
    qs.run_tool([str(TOOLS / 'train.py'), str(TINY_CLS), '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                 *options], env, str(log), verbose=False)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith('  train epoch 2 [') and 'loss' in line for line in lines)
    assert any('[DyRep] update' in line for line in lines)
    assert 'Config:' not in out and 'Warning' not in out and 'custom_imports' not in out
    full = log.read_text()
    assert 'Config:' in full and 'Epoch(train)' in full  # everything is in the log
    assert len(lines) < 40 < len(full.splitlines())
