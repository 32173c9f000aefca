"""Checks tools/train.py, test.py, deploy.py and analysis/plot_structure.py run before they build a
Runner or write anything: bad input is answered with one line, ``error: <what, where, what to do>``.

The catalogue (each check a small function below; all raise :class:`runner_setup.ToolError`):

1. unknown arguments of mmdyrep's hooks (``DyRepHook``, ``RandomStateHook``) and of a DyRep backbone,
   with the closest valid name (:func:`check_hook_arguments`, :func:`check_backbone_arguments`);
2. a missing or truncated checkpoint, or a file that is not one (:func:`read_checkpoint`);
3. a checkpoint of another model or toolbox, naming what it holds: toolbox, backbone depth, evolved
   convs (:func:`check_checkpoint_fits`, :class:`CheckpointModel`);
4. an evolved checkpoint with a config that lacks mmdyrep's imports or its DyRep backbone type
   (:func:`check_dyrep_registered`, :func:`check_checkpoint_fits`);
5. a data root or annotation file that does not exist (:func:`check_data`);
6. ``--resume`` without a checkpoint to resume from in the work dir (:func:`resume_checkpoint`).
"""
import difflib
import importlib
import inspect
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .runner_setup import fail, require_engine, walk_dicts

#: ResNet depth by (basic or bottleneck blocks, blocks per stage): the arch_settings of the toolboxes
RESNET_DEPTHS = {
    (False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34, (True, (3, 4, 6, 3)): 50,
    (True, (3, 4, 23, 3)): 101, (True, (3, 8, 36, 3)): 152,
}
#: state-dict key prefixes that only one toolbox's models have
TOOLBOX_KEYS = {
    'mmdet': ('rpn_head.', 'roi_head.', 'bbox_head.', 'mask_head.'),
    'mmseg': ('decode_head.', 'auxiliary_head.'),
    'mmpretrain': ('head.fc.', 'head.layers.'),
}
#: arguments the Runner takes out of a hook config before it builds the hook
HOOK_RUNNER_KEYS = ('type', 'priority')


def short_type(kind) -> str:
    if isinstance(kind, type):
        return kind.__name__
    return kind.split('.')[-1] if isinstance(kind, str) else ''


def _listing(names: Sequence[str], most: int = 6) -> str:
    shown = ', '.join(names[:most])
    return shown + (f', ... ({len(names)} in all)' if len(names) > most else '')


# ------------------------------------------------------------------------------ 1. arguments
def init_parameters(cls: type) -> List[str]:
    """The keyword arguments ``cls(...)`` accepts: the named parameters of each ``__init__`` along the
    MRO, down to the first one without ``**kwargs`` (DyRepResNet -> its mixin -> the toolbox ResNet)."""
    names: List[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]  # without self
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def check_arguments(args: dict, cls: type, where: str, config: str, ignore: Iterable[str] = ('type', )) -> None:
    """Every key of the config dict ``args`` (at ``where``) is an argument of ``cls``; else the error names
    the closest valid one (``difflib``) or lists them."""
    valid = init_parameters(cls)
    for key in args:
        if key in ignore or key in valid:
            continue
        close = difflib.get_close_matches(key, valid, n=1)
        hint = (f"did you mean '{close[0]}'?" if close else f"its arguments: {', '.join(valid)}" if valid
                else 'it takes no arguments')
        fail(f"config {config}: {where} {cls.__name__} got an unknown argument '{key}' ({hint})")


def mmdyrep_class(registry, kind) -> Optional[type]:
    """The class a config ``type`` names in ``registry``, when mmdyrep defines it (else None)."""
    cls = kind if isinstance(kind, type) else (registry.get(kind) if isinstance(kind, str) else None)
    if isinstance(cls, type) and cls.__module__.split('.')[0] == 'mmdyrep':
        return cls
    return None


def check_hook_arguments(cfg, config: str) -> None:
    """The ``custom_hooks`` of mmdyrep (DyRepHook, RandomStateHook) get only arguments they know."""
    from mmengine.registry import HOOKS
    for i, hook in enumerate(cfg.get('custom_hooks') or []):
        cls = mmdyrep_class(HOOKS, hook.get('type')) if isinstance(hook, dict) else None
        if cls is not None:
            check_arguments(hook, cls, f'custom_hooks[{i}]', config, ignore=HOOK_RUNNER_KEYS)


def dyrep_backbones(model_cfg, path: str = 'model') -> List[Tuple[str, dict]]:
    """``(path, dict)`` of every ``type='DyRep...'`` dict inside a model config."""
    return [(where, d) for where, d in walk_dicts(model_cfg or {}, path)
            if short_type(d.get('type')).startswith('DyRep')]


def check_dyrep_registered(cfg, config: str, scope: str) -> None:
    """A DyRep backbone type in the model needs mmdyrep's adapter in ``custom_imports`` (it registers the
    class in the toolbox's MODELS)."""
    models = importlib.import_module(f'{scope}.registry').MODELS
    for where, node in dyrep_backbones(cfg.get('model')):
        kind = node['type']
        if isinstance(kind, str) and models.get(kind) is None:
            fail(f"config {config}: {where}.type is '{kind}', which is not registered in {scope}: add "
                 f"custom_imports = dict(imports=['mmdyrep.models.{scope}_resnet', 'mmdyrep.engine']) to the config")


def check_backbone_arguments(cfg, config: str, scope: str) -> None:
    """Every DyRep backbone of the model gets only arguments its class (through the MRO) knows."""
    models = importlib.import_module(f'{scope}.registry').MODELS
    for where, node in dyrep_backbones(cfg.get('model')):
        cls = mmdyrep_class(models, node.get('type'))
        if cls is not None:
            check_arguments(node, cls, where, config)


def check_config(cfg, config: str, scope: str, registered: bool = True) -> None:
    """Catalogue 1 (and 4 for the config alone, unless ``registered=False``: deploy registers the
    backbones itself)."""
    require_engine('checking the config')  # registers DyRepHook / RandomStateHook
    if registered:
        check_dyrep_registered(cfg, config, scope)
    check_hook_arguments(cfg, config)
    check_backbone_arguments(cfg, config, scope)


# ----------------------------------------------------------------------------- 2. checkpoints
def is_local(path) -> bool:
    return isinstance(path, str) and '://' not in path


def read_checkpoint(path: str, what: str = 'checkpoint') -> dict:
    """:func:`mmdyrep.engine.compat.read_checkpoint` (tensors and plain data only); a missing, truncated or
    foreign file ends the tool with its reason."""
    require_engine('reading a checkpoint')
    from mmdyrep.engine.compat import CheckpointError
    from mmdyrep.engine.compat import read_checkpoint as read
    try:
        return read(path)
    except CheckpointError as e:
        text = str(e)
        if 'not a readable PyTorch checkpoint' in text:
            text += '; the file may be truncated or not a checkpoint: copy or save it again'
        fail(text if what == 'checkpoint' else f'{what}: {text}')


def state_dict_of(ckpt: dict) -> dict:
    """The model's state dict in a checkpoint (``state_dict`` of a runner checkpoint, or the dict itself),
    without DDP's ``module.`` prefix."""
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, dict):
        return {}
    if state and all(isinstance(k, str) and k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


# ------------------------------------------------------------------ 3. what a checkpoint holds
@dataclass
class CheckpointModel:
    """What a checkpoint holds, read from its meta and state-dict keys."""
    toolbox: Optional[str] = None
    heads: List[str] = field(default_factory=list)
    depth: Optional[int] = None
    blocks: Optional[Tuple[int, ...]] = None
    evolved: List[str] = field(default_factory=list)

    def describe(self) -> str:
        what = f'{"an" if (self.toolbox or "").startswith("mm") else "a"} {self.toolbox} model' \
            if self.toolbox else 'a model of unknown toolbox'
        if self.heads:
            what += f' ({", ".join(self.heads)})'
        if self.depth:
            what += f' with a ResNet-{self.depth} backbone'
        elif self.blocks:
            what += f' with a ResNet backbone of {self.blocks} blocks per stage'
        if self.evolved:
            n = len(self.evolved)
            what += f' and {n} evolved conv{"s" if n > 1 else ""} ({_listing(self.evolved, 4)})'
        return what


def toolbox_of(ckpt: dict, state: dict) -> Optional[str]:
    """The toolbox of a checkpoint: ``default_scope`` of the config in its meta, else its key prefixes."""
    meta = ckpt.get('meta')
    text = meta.get('cfg') if isinstance(meta, dict) else None
    found = re.findall(r"^default_scope\s*=\s*['\"](\w+)['\"]", text, re.M) if isinstance(text, str) else []
    if found:
        return found[-1]
    for toolbox, prefixes in TOOLBOX_KEYS.items():
        if any(k.startswith(prefixes) for k in state):
            return toolbox
    return None


def resnet_blocks(state: dict) -> Tuple[Optional[str], Optional[Tuple[int, ...]], bool]:
    """``(backbone prefix, blocks per stage, bottleneck)`` of the ResNet in a state dict (None, None, False
    when there is none)."""
    prefixes = {k[:k.index('layer1.0.')] for k in state if 'layer1.0.' in k}
    prefixes = sorted(p for p in prefixes if p == '' or p.endswith('.'))
    if not prefixes:
        return None, None, False
    prefix = 'backbone.' if 'backbone.' in prefixes else prefixes[0]
    pattern = re.compile(re.escape(prefix) + r'layer(\d+)\.(\d+)\.')
    stages: Dict[int, set] = {}
    for key in state:
        m = pattern.match(key)
        if m:
            stages.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    blocks = tuple(len(stages[i]) for i in sorted(stages))
    bottleneck = any(k.startswith(f'{prefix}layer1.0.conv3.') for k in state)
    return prefix, blocks, bottleneck


def evolved_convs(state: dict) -> List[str]:
    """The convs grown into DyRep blocks, from the structure entries of a state dict."""
    from mmdyrep.core.structure import STRUCTURE_KEY, decode_structure
    from mmdyrep.core import DyRepError
    names = []
    for key in state:
        if key == STRUCTURE_KEY or key.endswith('.' + STRUCTURE_KEY):
            try:
                structure = decode_structure(state[key], key)
            except DyRepError as e:
                fail(str(e))
            names += list((structure.get('blocks') or {}) if isinstance(structure, dict) else [])
    return names


def checkpoint_model(ckpt: dict) -> CheckpointModel:
    """:class:`CheckpointModel` of a checkpoint read by :func:`read_checkpoint`."""
    state = state_dict_of(ckpt)
    prefix, blocks, bottleneck = resnet_blocks(state)
    heads = sorted({k.split('.')[0] for k in state if k.split('.')[0].endswith('head')})
    return CheckpointModel(toolbox=toolbox_of(ckpt, state), heads=heads, blocks=blocks,
                           depth=RESNET_DEPTHS.get((bottleneck, blocks)) if blocks else None,
                           evolved=evolved_convs(state))


def config_backbone(cfg) -> Tuple[Optional[str], Optional[int]]:
    """``(type, depth)`` of the config's ``model.backbone`` (None where it does not say)."""
    backbone = (cfg.get('model') or {}).get('backbone')
    if not isinstance(backbone, dict):
        return None, None
    depth = backbone.get('depth')
    return short_type(backbone.get('type')) or None, depth if isinstance(depth, int) else None


def check_checkpoint_fits(ckpt: dict, path: str, what: str, cfg, config: str, scope: str,
                          compare_depth: bool = True, need_dyrep: bool = True) -> None:
    """Catalogue 3 and 4: the checkpoint holds a model of the config's toolbox and backbone depth, and an
    evolved one meets a DyRep backbone. ``compare_depth=False`` leaves another depth to the loader (deploy
    names the missing keys); ``need_dyrep=False`` allows a stock backbone type (deploy converts it)."""
    held = checkpoint_model(ckpt)
    kind, depth = config_backbone(cfg)
    other_toolbox = held.toolbox is not None and held.toolbox != scope
    other_depth = compare_depth and held.depth is not None and depth is not None and held.depth != depth
    if other_toolbox or other_depth:
        built = f'{"an" if scope.startswith("mm") else "a"} {scope} model'
        if depth is not None:
            built += f' with a ResNet-{depth} backbone'
        fail(f'{what} {path} holds {held.describe()}, but config {config} builds {built}: use the config '
             'the checkpoint was trained with, or a checkpoint of this model')
    if need_dyrep and held.evolved and not dyrep_backbones(cfg.get('model')):
        fail(f'{what} {path} holds an evolved DyRep backbone ({len(held.evolved)} evolved convs: '
             f"{_listing(held.evolved, 4)}), but the backbone of config {config} is {kind or 'missing'!r}, "
             f"not a DyRep type: use the DyRep config it was trained with (backbone type 'DyRep{kind or 'ResNet'}' "
             f'and custom_imports of mmdyrep.models.{scope}_resnet), or deploy it first with tools/deploy.py')


def check_checkpoint(path: str, what: str, cfg, config: str, scope: str, **fits) -> dict:
    """Catalogue 2-4 for one checkpoint the tool will load: read it once, compare it with the config."""
    ckpt = read_checkpoint(path, what)
    check_checkpoint_fits(ckpt, path, what, cfg, config, scope, **fits)
    return ckpt


# ---------------------------------------------------------------------------------- 6. resume
def resume_checkpoint(work_dir: str) -> str:
    """The checkpoint ``--resume`` (no path) resumes from: the one ``<work_dir>/last_checkpoint`` names, as
    mmengine finds it (mmengine silently starts from scratch without it: here that is an error)."""
    advice = 'give the checkpoint (--resume PATH), or drop --resume to start from scratch'
    if not osp.isdir(work_dir):
        fail(f'--resume: no checkpoint to resume from: the work dir {work_dir} does not exist; {advice}')
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        found = sorted((f for f in os.listdir(work_dir) if f.endswith('.pth')),
                       key=lambda f: osp.getmtime(osp.join(work_dir, f)))
        seen = f' (it has {_listing(found, 4)}: e.g. --resume {osp.join(work_dir, found[-1])})' if found else ''
        fail(f'--resume: no checkpoint to resume from in {work_dir}: it has no last_checkpoint file{seen}; {advice}')
    with open(pointer) as f:
        path = f.read().strip()
    if is_local(path) and not osp.isfile(path):
        fail(f'--resume: {pointer} names {path or "nothing"}, which does not exist; {advice}')
    return path


# ------------------------------------------------------------------------------------ 5. data
def env_hint(config: str, path: str) -> str:
    """`` (from $VAR ...)`` when the config file takes ``path`` from ``{{$VAR:default}}``."""
    try:
        with open(config) as f:
            text = f.read()
    except OSError:
        return ''
    for var, default in re.findall(r'\{\{\s*\$(\w+)\s*:\s*([^}]*)\}\}', text):
        value = os.environ.get(var)
        if value and path.startswith(value.rstrip('/')):
            return f' (from ${var}): set ${var} to the data, or create the data there'
        if not value and default and path.startswith(default.rstrip('/')):
            return f' (the default of ${var}, which is not set): set ${var} to the data, or create the data there'
    return ''


def data_paths(node, where: str) -> List[Tuple[str, str]]:
    """``(config path, file path)`` of every ``data_root`` and ``ann_file`` inside a dataloader or
    evaluator config (an ``ann_file`` joined to its dataset's ``data_root`` as mmengine joins them)."""
    found = []
    for path, d in walk_dicts(node, where):
        root = d.get('data_root')
        if is_local(root) and root:
            found.append((f'{path}.data_root', root))
        ann = d.get('ann_file')
        if is_local(ann) and ann:
            found.append((f'{path}.ann_file', ann if osp.isabs(ann) or not is_local(root) or not root
                          else osp.join(root, ann)))
    return found


def check_data(cfg, config: str, loaders: Sequence[str]) -> None:
    """Catalogue 5: the data roots and annotation files of the dataloaders (and their evaluators) the
    tool will use exist."""
    for loader in loaders:
        nodes = [(loader, cfg.get(loader))]
        evaluator = loader.replace('_dataloader', '_evaluator')
        if evaluator != loader:
            nodes.append((evaluator, cfg.get(evaluator)))
        for where, node in nodes:
            for key, path in data_paths(node or {}, where):
                if not osp.exists(path):
                    shown = path if osp.isabs(path) else f'{path} (relative to {os.getcwd()})'
                    option = key.replace('[', '.').replace(']', '')
                    todo = env_hint(config, path) or (': create the data there or point the config at it '
                                                      f'(--cfg-options {option}=PATH)')
                    fail(f'config {config}: {key} does not exist: {shown}{todo}')


def loaders_of(cfg, tool: str) -> List[str]:
    """The dataloaders ``tool`` ('train' or 'test') builds."""
    if tool == 'test':
        return ['test_dataloader']
    loaders = ['train_dataloader']
    if cfg.get('val_cfg') is not None and cfg.get('val_dataloader'):  # val_cfg=dict() runs a ValLoop
        loaders.append('val_dataloader')
    return loaders
