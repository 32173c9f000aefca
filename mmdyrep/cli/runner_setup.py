"""What tools/train.py, tools/test.py, tools/deploy.py and the analysis CLIs share: one entry for mmdet, mmseg and
mmpretrain configs.

* :func:`load_config` reads a config (clear errors for a missing file, a broken file, failing
  ``custom_imports`` or an unknown ``default_scope``) and registers the modules of the toolbox
  named by its ``default_scope``, as that toolbox's own ``tools/train.py`` does;
* :func:`adapt_to_cpu` rewrites ``SyncBN`` norms to ``BN`` when CUDA is not available (SyncBN
  cannot run on CPU tensors; the new DyRep branches copy the backbone's ``norm_cfg``);
* :func:`setup_distributed` makes ``--launcher pytorch`` work on CPU: it creates the gloo process
  group itself (mmengine's ``init_dist`` would call ``torch.cuda.set_device``) and selects the
  ``CPUCompatibleDDP`` wrapper of :mod:`mmdyrep.engine` (mmengine passes ``device_ids`` to any
  DistributedDataParallel subclass, which DDP refuses for a CPU module);
* :func:`close_distributed` ends a distributed run: the process group destroyed, its gloo threads given
  time to finish before the interpreter shuts down (without it, about one 2-process CPU run in twenty
  aborted at exit);
* :func:`run_main` answers bad input in one line, ``error: ...`` (the checks are in ``preflight.py``),
  or with the full traceback under ``--debug`` (:func:`add_debug`).
"""
import argparse
import datetime
import importlib
import os
import os.path as osp
import sys
import time
from typing import Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import print_log

#: default_scope -> module with ``register_all_modules``
TOOLBOXES = {'mmdet': 'mmdet.utils', 'mmseg': 'mmseg.utils', 'mmpretrain': 'mmpretrain.utils'}
#: DDP wrapper types that get ``device_ids`` from mmengine and so cannot wrap a CPU module
CUDA_ONLY_WRAPPERS = (None, 'MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel')
CPU_WRAPPER = 'CPUCompatibleDDP'

_engine = None
_engine_error: Optional[str] = None


class ToolError(Exception):
    """A problem with the user's input: printed as ``error: <message>``, exit code 1."""


def fail(message: str):
    raise ToolError(message)


def answer_errors(main, argv=None) -> int:
    """Run ``main(argv)``: 0, or 1 after a :class:`ToolError` or a ``DyRepError`` (input the package
    refused) printed as one line on stderr, ``error: <message>``. With ``--debug`` in the arguments the
    error is raised with its full traceback instead."""
    from mmdyrep.core import DyRepError
    debug = '--debug' in (sys.argv[1:] if argv is None else [str(a) for a in argv])
    try:
        main(argv)
    except (ToolError, DyRepError) as e:
        if debug:
            raise
        message = ' '.join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f'error: {message}', file=sys.stderr)
        return 1
    return 0


def run_main(main, argv=None) -> None:
    """:func:`answer_errors`, exiting with code 1 on an error."""
    if answer_errors(main, argv):
        sys.exit(1)


def add_debug(parser) -> None:
    parser.add_argument('--debug', action='store_true',
                        help='on an error, raise it with its full traceback instead of one line')


# ---------------------------------------------------------------------------------- engine
def import_engine():
    """Import :mod:`mmdyrep.engine` (DyRepHook, CPU DDP wrapper, safe globals for ``--resume``).

    Returns the module, or None (the reason in :func:`engine_error`) when it cannot be imported."""
    global _engine, _engine_error
    if _engine is None and _engine_error is None:
        try:
            _engine = importlib.import_module('mmdyrep.engine')
        except Exception as e:  # noqa: BLE001  (an ImportError, or an error inside the package)
            _engine_error = f'{type(e).__name__}: {e}'
    return _engine


def engine_error() -> Optional[str]:
    return _engine_error


def require_engine(what: str):
    engine = import_engine()
    if engine is None:
        fail(f'{what} needs mmdyrep.engine, which cannot be imported ({_engine_error}). '
             'Is mmdyrep installed in this environment (bash tools/install.sh)?')
    return engine


# ---------------------------------------------------------------------------------- config
def load_config(path: str, cfg_options: Optional[dict] = None) -> Tuple[Config, str]:
    """Read ``path``, merge ``cfg_options``, register the toolbox of its ``default_scope``.

    Returns ``(cfg, scope)``."""
    if not osp.isfile(path):
        fail(f'config file not found: {path}')
    import_engine()  # DyRep configs import it in custom_imports; a failure is reported below
    try:
        cfg = Config.fromfile(path)
    except ImportError as e:
        hint = ''
        if _engine_error and 'mmdyrep' in str(e):
            hint = f' (importing mmdyrep.engine fails: {_engine_error})'
        fail(f'config {path}: its custom_imports cannot be imported: {e}{hint}')
    except Exception as e:  # noqa: BLE001  (syntax errors, missing _base_ files, ...)
        fail(f'cannot read config {path}: {type(e).__name__}: {e}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in TOOLBOXES:
        fail(f"config {path}: default_scope is {scope!r}; these tools run configs of "
             f"{', '.join(TOOLBOXES)} (set default_scope, or inherit a toolbox config, e.g. "
             "_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'])")
    importlib.import_module(TOOLBOXES[scope]).register_all_modules(init_default_scope=False)
    return cfg, scope


def default_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> str:
    """CLI > ``work_dir`` in the file > ``./work_dirs/<config name>`` (mmdet's rule)."""
    if work_dir is not None:
        return work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def walk_dicts(node, path: str = 'cfg') -> Iterator[Tuple[str, dict]]:
    """Every dict inside a config tree (dicts, lists, tuples), parents first, with its path
    (``cfg.model.backbone``, ``cfg.train_pipeline[2]``)."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk_dicts(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from walk_dicts(value, f'{path}[{i}]')


def sync_bn_to_bn(node, path: str = 'cfg') -> List[str]:
    """Rewrite every ``type='*SyncBN'`` dict in ``node`` to ``'BN'`` in place; returns their paths."""
    found = []
    for where, d in walk_dicts(node, path):
        kind = d.get('type')
        if isinstance(kind, str) and kind.split('.')[-1].lower().endswith('syncbn'):
            d['type'] = 'BN'
            found.append(where)
    return found


def adapt_to_cpu(cfg: Config) -> List[str]:
    """On a machine without CUDA: SyncBN -> BN in the config (logged). Returns what changed."""
    if torch.cuda.is_available():
        return []
    changed = sync_bn_to_bn(cfg._cfg_dict, 'cfg')
    changed = sorted(set(p.replace('cfg.', '', 1) for p in changed))
    if changed:
        print_log(f'CUDA is not available: SyncBN cannot run on CPU tensors, so the SyncBN norms of '
                  f"this config run as BN ({', '.join(changed)})", logger='current')
    if cfg.get('sync_bn') is not None:
        print_log(f'CUDA is not available: ignoring sync_bn={cfg.sync_bn!r} (BN stays BN)', logger='current')
        cfg.sync_bn = None
        changed.append('sync_bn')
    return changed


# ----------------------------------------------------------------------------- distributed
def check_launcher(launcher: str) -> None:
    """On a machine without CUDA, ``--launcher`` must be ``pytorch`` started by torchrun (no side effects:
    the tools call it before their other checks)."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        fail(f'--launcher {launcher} needs GPUs (mmengine calls torch.cuda.set_device); on a CPU machine use '
             '--launcher pytorch through tools/dist_train.sh / tools/dist_test.sh (torchrun, gloo)')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        fail(f"--launcher pytorch expects torchrun's environment ({', '.join(missing)} not set); "
             'start it with tools/dist_train.sh CONFIG NUM_PROCESSES')


def setup_distributed(cfg: Config, launcher: str) -> None:
    """``--launcher`` on a machine without CUDA: gloo process group + a DDP wrapper for CPU.

    With CUDA this does nothing (the Runner initialises NCCL as usual)."""
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    check_launcher(launcher)
    require_engine('distributed training on CPU (CPUCompatibleDDP)')
    import torch.distributed as torch_dist
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}) or {})
    dist_cfg['backend'] = 'gloo'
    cfg.setdefault('env_cfg', {})
    cfg.env_cfg['dist_cfg'] = dist_cfg
    if not torch_dist.is_initialized():
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                      world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    wrapper = cfg.get('model_wrapper_cfg')
    kind = wrapper.get('type') if wrapper else None
    if kind in CUDA_ONLY_WRAPPERS:
        new = dict(wrapper or {})
        new['type'] = CPU_WRAPPER
        new.setdefault('broadcast_buffers', False)
        new.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = new
        if int(os.environ['RANK']) == 0:
            print_log(f'CPU distributed: gloo process group of {os.environ["WORLD_SIZE"]} processes, '
                      f'model wrapper {new}', logger='current')
    else:
        print_log(f'CPU distributed: keeping the configured model wrapper {kind!r}; it must not pass '
                  'device_ids to DistributedDataParallel for a CPU module', logger='current',
                  level=30)


def close_distributed(settle_s: float = 0.2) -> None:
    """Destroy the default process group once the Runner is done (as PyTorch's documentation asks every
    trainer process to do near the end of its main), then release the GIL for ``settle_s`` seconds.

    A gloo worker thread frees a collective's tensors just after the collective completes, and needs the
    GIL to drop their Python objects. A thread that asks for the GIL while the interpreter shuts down is
    ended by Python (``pthread_exit``), and unwinding it through C++ aborts the whole process ("terminate
    called without an active exception", SIGABRT) after a run that finished: seen here in about one
    ``tools/dist_train.sh`` / ``dist_test.sh`` run in twenty on CPU, the core dump showing
    ``ProcessGroupGloo::runLoop`` -> ``~AsyncBroadcastWork`` -> ``take_gil`` -> ``pthread_exit``
    (pytorch/pytorch#179291). Destroying the group does not stop those threads (the DDP wrapper still holds
    it); the pause lets them finish while the interpreter is alive."""
    import torch.distributed as torch_dist
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        time.sleep(settle_s)


def build_runner(cfg: Config, scope: str, launcher: str):
    """Distributed setup (:func:`setup_distributed`), SyncBN -> BN on CPU, then the Runner (the
    toolbox's ``RUNNERS`` when the config names a ``runner_type``), as train.py and test.py need."""
    setup_distributed(cfg, launcher)
    adapt_to_cpu(cfg)
    if 'runner_type' in cfg:
        return importlib.import_module(f'{scope}.registry').RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)


def add_local_rank(parser) -> None:
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank; torchrun neither
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def set_local_rank_env(args) -> None:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
