"""The PyTorch-only benchmark (mmdyrep.analysis.benchmark, tools/analysis/torchvision_cost.py) and the
device checks (mmdyrep.analysis.device_checks) on CPU: what a GPU machine runs, on small inputs."""
import json

import pytest
import torch

from mmdyrep.analysis import benchmark
from mmdyrep.analysis.device_checks import check_device
from mmdyrep.core import iter_blocks
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
    ops = benchmark.block_ops(channels=16, size=8)
    assert ops['origin']['ratio'] == 1.0
    assert ops['dyrep+fast']['ops'] < 0.6 * ops['dyrep']['ops']
    assert ops['dbb+fast']['ops'] < 0.6 * ops['dbb']['ops']
    assert ops['repvgg+fast']['ops'] == ops['repvgg']['ops']  # left per branch: grouping saves nothing


def test_cli_end_to_end_on_cpu(tmp_path):
    out = tmp_path / 'cost.json'
    proc = run_tool(['tools/analysis/torchvision_cost.py', '--archs', 'resnet18', '--batches', '2', '--size', '32',
                     '--repeats', '1', '--warmup', '0', '--precisions', 'fp32', '--out', out])
    result = json.loads(out.read_text())
    timing = result['archs']['resnet18']['timing']['fp32/2']
    assert set(timing) == {'origin', 'repvgg', 'repvgg+fast', 'dbb', 'dbb+fast', 'dyrep', 'dyrep+fast'}
    assert timing['origin']['time_ratio'] == 1.0 and all(t['median_s'] > 0 for t in timing.values())
    ops = result['archs']['resnet18']['ops']
    assert ops['dyrep+fast'] < ops['dyrep'] and ops['origin'] < ops['dyrep+fast']
    assert result['machine']['device'] == 'cpu' and 'dyrep+fast' in output(proc)
    bad = run_tool(['tools/analysis/torchvision_cost.py', '--structure', 'resnet18'], check=False)
    assert bad.returncode == 2 and 'expected ARCH=FILE' in bad.stderr


def test_device_checks_on_cpu():
    """The checks the GPU machine runs, here in float32 on CPU: bounds that hold on this device."""
    errors = check_device('cpu', 'resnet18', batch=2, size=64)
    for key in ('grow', 'fast_norm_eval', 'cut', 'deploy'):
        assert errors[key] < 1e-5, (key, errors[key])
    assert errors['fast_train'] < 1e-4  # gradients too; BN over 8 values per channel at layer4 here
    assert errors['bf16_steps'] < 0.2  # finite, and near the per-branch run after 3 bf16 steps


def test_needs_nothing_from_openmmlab():
    """The GPU machine has PyTorch only: the benchmark and the checks import no OpenMMLab package."""
    import subprocess
    import sys
    code = ("import sys\nfor m in ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'): sys.modules[m] = None\n"
            "import mmdyrep.analysis.benchmark, mmdyrep.analysis.device_checks\nprint('ok')")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr
