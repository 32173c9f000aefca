"""The PyTorch-only benchmark (mmdyrep.analysis.benchmark, tools/analysis/torchvision_cost.py) and the
device checks (mmdyrep.analysis.device_checks) on CPU: what a GPU machine runs, on small inputs."""
import json

import pytest
import torch
from torch import nn

from mmdyrep.analysis import benchmark
from mmdyrep.analysis.device_checks import check_device
from mmdyrep.core import fast_block, grow, iter_blocks
from mmdyrep.core.block import set_fast_forward
from tests.e2e.helpers import output, run_tool


@pytest.mark.parametrize('arch, params_ratio', [('resnet18', 1.53), ('resnet50', 1.25)])
def test_fixed_table3_structure(arch, params_ratio):
    """The fixed DyRep structure is the size the docs say (paper Table 3: +23 % R50, +44 % R18)."""
    origin, dyrep = benchmark.build(arch, 'origin'), benchmark.build(arch, 'dyrep')
    ratio = benchmark.num_params(dyrep) / benchmark.num_params(origin)
    assert ratio == pytest.approx(params_ratio, abs=0.01)
    assert sorted(n for n, _ in iter_blocks(dyrep)) == sorted(benchmark.TABLE3_CONVS[arch])
    with torch.no_grad():  # Rep: the same function as the plain model at the start (eval mode)
        x = torch.randn(1, 3, 64, 64)
        assert torch.allclose(dyrep.eval()(x), origin.eval()(x), rtol=0, atol=1e-4)


def test_block_ops_fast_path_issues_fewer():
    """The fast forward issues fewer ops and CUDA kernels than the per-branch one, moves fewer bytes and
    saves far fewer activations for the backward (it recomputes its first stage there). At C = 64,
    64 x 56 x 56 (the default), measured for all branches / DBB's set / RepVGG's: kernels 11.3x / 8.6x /
    3.0x the conv + BN's per branch, 7.4x / 5.1x / 2.9x fast; bytes moved 12.0x / 8.1x / 3.7x per branch,
    11.45x / 7.5x / 3.5x fast; saved 10.2x / 8.2x / 2.0x per branch, 5.0x / 3.0x / 2.0x fast."""
    ops = benchmark.block_ops(channels=16, size=8, batch=2)
    assert ops['origin']['ratio'] == ops['origin']['kernel_ratio'] == ops['origin']['traffic'] == 1.0
    for mode, fewer in (('dyrep', 0.67), ('dbb', 0.61), ('repvgg', 1.0)):
        fast = ops[mode + '+fast']
        assert fast['ops'] <= fewer * ops[mode]['ops'] and fast['kernels'] < fewer * ops[mode]['kernels']
        assert fast['kernels'] == fast['kernel_ops'] and not fast['hidden']  # no conv copies its input
    ops = benchmark.block_ops()
    for mode in ('dyrep', 'dbb', 'repvgg'):
        assert ops[mode + '+fast']['traffic'] < 0.97 * ops[mode]['traffic']
        assert ops[mode + '+fast']['memory'] <= ops[mode]['memory']
    assert ops['dyrep+fast']['memory'] < 0.5 * ops['dyrep']['memory']
    assert ops['dbb+fast']['memory'] < 0.4 * ops['dbb']['memory']


def test_cli_end_to_end_on_cpu(tmp_path):
    out = tmp_path / 'cost.json'
    proc = run_tool(['tools/analysis/torchvision_cost.py', '--archs', 'resnet18', '--batches', '2', '--size', '32',
                     '--repeats', '1', '--warmup', '0', '--precisions', 'fp32', '--channels-last', '--out', out])
    result = json.loads(out.read_text())
    assert result['channels_last'] and result['compile_backend'] is None
    timing = result['archs']['resnet18']['timing']['fp32/2']
    assert set(timing) == {'origin', 'repvgg', 'repvgg+fast', 'dbb', 'dbb+fast', 'dyrep', 'dyrep+fast'}
    assert timing['origin']['time_ratio'] == 1.0 and all(t['median_s'] > 0 for t in timing.values())
    ops, traffic = result['archs']['resnet18']['ops'], result['archs']['resnet18']['traffic']
    assert ops['dyrep+fast'] < ops['dyrep'] and ops['origin'] < ops['dyrep+fast']
    assert traffic['origin'] == 1.0 and traffic['dbb'] > traffic['repvgg'] > 1.0
    memory = result['archs']['resnet18']['memory']
    assert memory['origin'] == 1.0 and memory['dbb'] > memory['repvgg'] > 1.0
    assert result['machine']['device'] == 'cpu' and 'dyrep+fast' in output(proc)
    bad = run_tool(['tools/analysis/torchvision_cost.py', '--structure', 'resnet18'], check=False)
    assert bad.returncode == 2 and 'expected ARCH=FILE' in bad.stderr


def test_device_checks_on_cpu():
    """The checks the GPU machine runs, here in float32 on CPU: bounds that hold on this device."""
    errors = check_device('cpu', 'resnet18', batch=2, size=64)
    for key in ('grow', 'fast_norm_eval', 'cut', 'deploy'):
        assert errors[key] < 1e-5, (key, errors[key])
    # gradients too; BN over 8 values per channel at layer4 here
    assert errors['fast_train'] < 1e-4 and errors['channels_last'] < 1e-4
    assert errors['bf16_steps'] < 0.2  # finite, and near the per-branch run after 3 bf16 steps


def test_needs_nothing_from_openmmlab():
    """The GPU machine has PyTorch only: the benchmark and the checks import no OpenMMLab package."""
    import subprocess
    import sys
    code = ("import sys\nfor m in ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'): sys.modules[m] = None\n"
            "import mmdyrep.analysis.benchmark, mmdyrep.analysis.device_checks, mmdyrep.analysis.kernels\nprint('ok')")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr


def _tiny(grown: bool) -> nn.Module:
    """A 1000-class model small enough to compile in seconds; ``grown``: its 3x3 conv with every branch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 1000))
    if grown:
        grow(model, ['0'])
        set_fast_forward(model, True)
    return model


def test_compiled_models_in_channels_last_on_cpu(monkeypatch):
    """The compile path of the benchmark (``--compile``) with the ``aot_eager`` backend (inductor takes
    minutes here) and channels_last, the BNs grouped as on a GPU: each compiled model compiles in its
    own first step, is timed beside the eager ones, starts from the eager model's loss and updates its
    BN buffers at every step (the grouped statistics are written back under torch.compile)."""
    monkeypatch.setitem(fast_block.GROUP_BNS, 'cpu', True)
    torch._dynamo.reset()
    models = {'origin': _tiny(False), 'dyrep+fast': _tiny(True)}
    models = {n: m.to(memory_format=torch.channels_last) for n, m in models.items()}
    models['dyrep'] = _tiny(True)  # a per-branch reference: not compiled
    set_fast_forward(models['dyrep'], False)
    models = benchmark.with_compiled(models, backend='aot_eager')
    assert list(models) == ['origin', 'dyrep+fast', 'dyrep', 'origin+compile', 'dyrep+fast+compile']

    def no_compiler(gm, example_inputs):  # as inductor fails on a machine without a C compiler for Triton
        raise RuntimeError('Failed to find C compiler')

    models['broken+compile'] = torch.compile(_tiny(False), backend=no_compiler)
    logs = []
    timing = benchmark.time_modes(models, batch=2, size=16, precision='fp32', device='cpu', warmup=1, repeats=1,
                                  log=logs.append, channels_last=True)
    assert any('dyrep+fast+compile: first step' in line for line in logs)
    assert 'C compiler' in timing.pop('broken+compile')['error']  # recorded; the others are timed
    for name, r in timing.items():
        assert r['median_s'] > 0 and ('first_step_s' in r) == name.endswith('+compile')
        assert ('time_ratio_compiled' in r) == name.endswith('+compile')
    assert timing['origin+compile']['time_ratio_compiled'] == 1.0
    for name in ('origin+compile', 'dyrep+fast+compile'):
        assert timing[name]['loss_vs_eager'] < 1e-6, name
    steps = lambda m: int(m.get_submodule('0.branches.1x1.norm').num_batches_tracked)  # noqa: E731
    assert steps(models['dyrep+fast']) == 2 and steps(models['dyrep+fast+compile']) == 3  # + the compiling step
    assert models['dyrep+fast+compile'].get_submodule('_orig_mod.0').branches['1x1'].conv.weight.is_contiguous(
        memory_format=torch.channels_last)
    timing['broken+compile'] = {'error': 'RuntimeError: Failed to find C compiler'}
    lines = benchmark.table({'archs': {'tiny': {'ops': {}, 'timing': {'fp32/2': timing}}}, 'block_ops': {}})
    assert any('dyrep+fast+compile' in line and 'first step' in line for line in lines)
    assert any('broken+compile' in line and 'C compiler' in line for line in lines)
    torch._dynamo.reset()
