"""The per-block kernel count of issue 12 (mmdyrep.analysis.kernels): on CPU it counts aten ops, with
the fast and the compiled forwards beside the per-branch one; the CUDA profiler path runs on a GPU only
(tools/analysis/gpu_check.sh)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmdyrep.analysis.kernels import HOST_INPUT, block_kernels, build_block, device_kernels, host_settings, host_times
from mmdyrep.analysis.ops import train_step_counts
from mmdyrep.core import fast_block

ROOT = Path(__file__).resolve().parents[2]


def test_block_kernels_on_cpu_count_ops_and_compile():
    result = block_kernels('cpu', channels=8, size=8, batch=2, precision='fp32', compile_backend='aot_eager',
                           warmup=1, repeats=1)
    v = result['variants']
    assert result['unit'] == 'aten_ops' and not any('error' in r for r in v.values()), v
    assert v['conv+bn']['aten_ops'] == 8 and v['conv+bn']['ratio'] == 1.0
    # on CPU the fast forward keeps the per-branch forward for training-mode BNs (fast_block.GROUP_BNS)
    assert v['dyrep']['aten_ops'] > v['dbb']['aten_ops'] > v['conv+bn']['aten_ops']
    for name in ('dyrep+fast+compile', 'dbb+fast+compile'):
        assert v[name]['compile_s'] > 0 and v[name]['ms'] > 0


def test_cli_writes_json(tmp_path):
    out = tmp_path / 'k.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/analysis/block_kernels.py'), '--device', 'cpu',
                           '--channels', '4', '--size', '6', '--batch', '2', '--no-compile', '--warmup', '0',
                           '--repeats', '1', '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data['variants']) == {'conv+bn', 'dyrep', 'dyrep+fast', 'dbb', 'dbb+fast', 'repvgg', 'repvgg+fast',
                                     'dyrep+one-conv'}
    assert 'block_kernels.py' in data['command'] and 'conv+bn' in proc.stdout


@pytest.mark.parametrize('bad', [['--channels', '0'], ['--device', 'cuda:7']])
def test_cli_refuses_bad_input(bad):
    if bad[0] == '--device' and torch.cuda.is_available():
        pytest.skip('a CUDA device exists')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/analysis/block_kernels.py'), *bad],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and bad[0] in proc.stderr


def test_device_kernels_rank_the_events_by_time():
    """On CPU the profiler's events are the aten ops: counted, and the longest ranked first with their
    calls (on CUDA the same code ranks the kernels)."""
    model = build_block('dyrep', 8)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    n, top = device_kernels(lambda: model(x).sum().backward(), 'cpu', top=3)
    assert n > 50 and len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] > 0
    names = {name for name, _, _ in top}
    assert all(calls >= 1 for _, _, calls in top) and len(names) == 3


def test_host_settings_group_the_bns_as_on_a_gpu_and_restore_everything():
    """Under host_settings the CPU runs the fast forward a GPU runs (grouped BNs: fewer ops than per branch),
    on one thread without oneDNN; after it, the CPU's own choices are back."""
    threads, grouped, onednn = torch.get_num_threads(), dict(fast_block.GROUP_BNS), torch.backends.mkldnn.enabled
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    fast, per_branch = build_block('dyrep+fast', 8), build_block('dyrep', 8)

    def ops(model):
        return sum(train_step_counts(model, x).ops.values())

    ops(fast), ops(per_branch)  # first calls (a padding constant is made once)
    assert ops(fast) == ops(per_branch)  # on CPU the per-branch forward runs for training-mode BNs
    with host_settings():
        assert torch.get_num_threads() == 1 and not torch.backends.mkldnn.enabled
        assert ops(fast) < 0.7 * ops(per_branch)
    assert (torch.get_num_threads(), dict(fast_block.GROUP_BNS), torch.backends.mkldnn.enabled) == \
        (threads, grouped, onednn)


def test_host_times_time_every_variant_against_conv_bn_and_its_per_branch_forward():
    n, _, h, w = HOST_INPUT  # large enough that the fast forward plans as for a full-sized input
    assert n * h * w >= fast_block.MIN_POSITIONS
    result = host_times(('conv+bn', 'dbb', 'dbb+fast'), rounds=1, steps=2, warmup=1)
    assert set(result) == {'conv+bn', 'dbb', 'dbb+fast'} and result['conv+bn']['ratio'] == 1.0
    assert all(r['us'] > 0 for r in result.values())
    assert result['dbb+fast']['vs_per_branch'] == result['dbb+fast']['us'] / result['dbb']['us']
    with pytest.raises(ValueError, match="unknown variant.*dbb\\+fast\\+compile"):
        host_times(('dbb+fast+compile', ))


def test_cli_host_writes_json(tmp_path):
    out = tmp_path / 'h.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/analysis/block_kernels.py'), '--host', '--rounds', '1',
                           '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data['input'] == [1, 4, 16, 16] and data['variants']['repvgg+fast']['vs_per_branch'] > 0
    assert 'x per branch' in proc.stdout and proc.stderr == ''
