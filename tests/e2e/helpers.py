"""Helpers of the end-to-end tests: the tools run as child processes (as a user runs them), from
the repository root, with the data roots of the tiny configs given by environment variables."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
TINY = REPO / 'configs' / 'tiny'
TINY_DET = TINY / 'faster-rcnn_dyrep_r50_fpn_synthetic-coco.py'
TINY_DET_CD = TINY / 'faster-rcnn_dyrep_r50_fpn_synthetic-coco_cd.py'
TINY_SEG = TINY / 'pspnet_dyrep_r18-d8_synthetic-cityscapes.py'
TINY_CLS = TINY / 'imagenet_dyrep_r18_synthetic.py'
TINY_CLS_R50 = TINY / 'imagenet_dyrep_r50_synthetic.py'

#: shorter than the tiny configs themselves: one epoch with one DyRep update at its end
ONE_EPOCH = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'custom_hooks.0.end=1']


def run_tool(args, env=None, check=True, timeout=900) -> subprocess.CompletedProcess:
    """``python tools/<args>`` (or ``bash tools/<x>.sh``) from the repository root."""
    args = [str(a) for a in args]
    cmd = ['bash'] + args if args[0].endswith('.sh') else [sys.executable] + args
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault('PYTHONWARNINGS', 'ignore')
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed with exit code {proc.returncode}\n--- stdout (tail)\n'
                             f'{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}')
    return proc


def output(proc) -> str:
    return proc.stdout + proc.stderr


def history(work_dir) -> dict:
    with open(Path(work_dir) / 'dyrep_history.json') as f:
        return json.load(f)


def updates(work_dir) -> list:
    """The history records of updates that grew something."""
    return [r for r in history(work_dir)['records'][1:] if r['grown']]


def log_files(work_dir) -> list:
    return sorted(Path(work_dir).glob('*/*.log'))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def snapshot(path) -> dict:
    """``{relative path: (size, mtime_ns)}`` of everything under ``path`` (``path`` itself included); ``{}``
    when it does not exist: equal snapshots mean nothing was created, changed or removed there."""
    path = Path(path)
    if not path.exists():
        return {}
    found = {'.': (path.stat().st_size if path.is_file() else 0, path.stat().st_mtime_ns)}
    for p in sorted(path.rglob('*')):
        found[str(p.relative_to(path))] = (p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
    return found


def save_evolved_checkpoint(config, convs, path) -> Path:
    """Build the model of ``config`` in this process, grow ``convs`` of its backbone into DyRep blocks and
    save ``{'meta': {'cfg': <config text>}, 'state_dict': ...}`` as a runner checkpoint's minimal form (no
    training needed; the structure travels in the state dict)."""
    import importlib

    import torch
    from mmengine.config import Config

    from mmdyrep.core import grow
    cfg = Config.fromfile(str(config))  # its custom_imports register the DyRep backbone
    model = importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model)
    grow(model.backbone, list(convs))
    torch.save({'meta': {'cfg': cfg.pretty_text, 'epoch': 1, 'iter': 1}, 'state_dict': model.state_dict()}, path)
    return Path(path)
