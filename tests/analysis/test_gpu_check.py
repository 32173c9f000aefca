"""tools/analysis/gpu_check.sh, the one command for a GPU machine, run here with stand-ins for python3
and nvidia-smi: its stages run in order under their limits, STAGES picks some, and a stage that would
start with too little of BUDGET left is skipped with a line saying so."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALL = ['checks', 'cost', 'kernels', 'cost_nhwc', 'compile_dyrep', 'compile_dbb']


def _run(tmp_path, python_body, **env):
    stub = tmp_path / 'bin'
    stub.mkdir(exist_ok=True)
    (stub / 'nvidia-smi').write_text('#!/bin/bash\necho "stand-in GPU, 1 MiB"\n')
    (stub / 'py').write_text('#!/bin/bash\n' + python_body)
    for f in stub.iterdir():
        f.chmod(0o755)
    out = tmp_path / 'out'
    env = dict(os.environ, PATH=f'{stub}:{os.environ["PATH"]}', PYTHON=str(stub / 'py'), OUT=str(out), **env)
    proc = subprocess.run(['bash', str(ROOT / 'tools/analysis/gpu_check.sh')], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, out


def test_all_stages_in_order(tmp_path):
    stdout, out = _run(tmp_path, 'echo "ran $1"\n')
    started = [line.split()[1] for line in stdout.splitlines() if line.startswith('== ')]
    assert started == ALL
    assert 'tools/analysis/block_kernels.py' in (out / 'kernels.txt').read_text()
    assert (out / 'gpu.txt').read_text().startswith('stand-in GPU')


def test_stages_picks_and_budget_skips(tmp_path):
    stdout, out = _run(tmp_path, 'echo "ran $1"\n', STAGES='kernels compile_dbb')
    assert [line.split()[1] for line in stdout.splitlines() if line.startswith('== ')] == ['kernels', 'compile_dbb']
    stdout, out = _run(tmp_path, 'sleep 2\n', STAGES='checks cost', BUDGET='46')
    assert '== checks (limit 46 s)' in stdout and 'cost: skipped' in (out / 'cost.txt').read_text()
