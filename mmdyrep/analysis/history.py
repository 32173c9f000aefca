"""Structure histories of DyRep training runs: load, check, average, summarise.

``DyRepHook`` writes ``<work_dir>/dyrep_history.json`` (and keeps the same records in the
checkpoints, under ``checkpoint['dyrep']['history']``)::

    {"format": "mmdyrep.history", "version": 1, "by_epoch": true, "max_iters": 1200,
     "max_epochs": 12, "input_shape": [3, 224, 224],
     "records": [{"iter": 0, "epoch": 0, "grown": {}, "cut": {}, "params": ..., "flops": ...,
                  "deployed_params": ..., "deployed_flops": ...,
                  "structure": <mmdyrep.core.extract_structure(backbone)>,
                  "importances": {"<block path>": {"<branch>": s, ...}},
                  "saliency": {"metric": "synflow", "scores": {"synflow": {"<conv>": score, ...}},
                               "degeneracy": {"<conv>": ratio, ...}, "kinds": {"<conv>": "plain", ...},
                               "norm_modes": {"<conv>": "batch-statistics", ...}}}, ...]}

Each record is the state right *after* the update at its iteration (the first one is the
start of training). ``saliency`` (update records only) is the full score table the update chose
from: every candidate's average score, degeneracy ratio, kind (plain / origin / inner) and norm mode.
``params`` / ``flops`` are the backbone's (conv + linear MACs for one
input of ``input_shape``). Everything here works on that plain data (no OpenMMLab imports).
"""
import json
import math
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence

from mmdyrep.core.history import FORMAT, HISTORY_FILE, VERSION, HistoryError, make_history, time_average

STRUCTURE_FORMAT = 'mmdyrep.structure'
#: Keys averaged over training by :func:`summary` (those present in every record).
COST_KEYS = ('params', 'flops', 'deployed_params', 'deployed_flops')


# ------------------------------------------------------------------ loading
def history_path(path: str) -> str:
    """``path`` itself if it is a file, else ``<path>/dyrep_history.json``."""
    return osp.join(path, HISTORY_FILE) if osp.isdir(path) else path


def load_history(path: str) -> dict:
    """Read and validate a history file (or the one in work dir ``path``).

    Raises :class:`HistoryError` naming the file and what is wrong with it."""
    file = history_path(path)
    if not osp.isfile(file):
        where = f'work dir {path!r} has no {HISTORY_FILE}' if osp.isdir(path) else f'{file!r} does not exist'
        raise HistoryError(f'cannot read the DyRep history: {where} (DyRepHook writes it at the start of '
                           'training and after every update)')
    try:
        with open(file, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise HistoryError(f'{file}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the file '
                           'is truncated or corrupt') from None
    except UnicodeDecodeError as e:
        raise HistoryError(f'{file}: not a text file ({e.reason} at byte {e.start}); the file is corrupt') from None
    validate_history(data, source=file)
    return data


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_changes(value, where: str, fail) -> None:
    if not isinstance(value, dict):
        fail(f'{where} must be a dict {{conv: [branch, ...]}}, got {type(value).__name__}')
    for conv, branches in value.items():
        if not isinstance(branches, list) or not all(isinstance(b, str) for b in branches):
            fail(f'{where}[{conv!r}] must be a list of branch names, got {branches!r:.100}')


def validate_history(history, source: str = '<history>') -> None:
    """Check ``history`` against the format above; :class:`HistoryError` names ``source`` and the problem."""

    def fail(problem: str):
        raise HistoryError(f'{source}: {problem}')

    if not isinstance(history, dict):
        fail(f'expected a JSON object with format {FORMAT!r}, got {type(history).__name__}')
    if history.get('format') != FORMAT:
        fail(f'not a DyRep structure history: format is {history.get("format")!r}, expected {FORMAT!r}')
    if history.get('version') != VERSION:
        fail(f'unsupported history version {history.get("version")!r} (this mmdyrep reads version {VERSION})')
    for key in ('by_epoch', 'max_iters', 'records'):
        if key not in history:
            fail(f'missing key {key!r}')
    if not isinstance(history['by_epoch'], bool):
        fail(f'by_epoch must be true or false, got {history["by_epoch"]!r}')
    if not _is_int(history['max_iters']) or history['max_iters'] < 0:
        fail(f'max_iters must be an int >= 0, got {history["max_iters"]!r}')
    max_epochs = history.get('max_epochs')
    if max_epochs is not None and (not _is_int(max_epochs) or max_epochs < 0):
        fail(f'max_epochs must be null or an int >= 0, got {max_epochs!r}')
    shape = history.get('input_shape')
    if shape is not None and (not isinstance(shape, list) or not all(_is_int(v) and v > 0 for v in shape)):
        fail(f'input_shape must be a list of positive ints, got {shape!r}')
    records = history['records']
    if not isinstance(records, list) or not records:
        fail('records must be a non-empty list (the first record is the start of training)')
    previous = None
    for i, rec in enumerate(records):
        where = f'records[{i}]'
        if not isinstance(rec, dict):
            fail(f'{where} must be an object, got {type(rec).__name__}')
        for key in ('iter', 'epoch', 'grown', 'cut', 'params', 'flops'):
            if key not in rec:
                fail(f'{where} has no {key!r}')
        if not _is_int(rec['iter']) or rec['iter'] < 0:
            fail(f'{where}.iter must be an int >= 0, got {rec["iter"]!r}')
        if not _is_int(rec['epoch']) or rec['epoch'] < 0:
            fail(f'{where}.epoch must be an int >= 0, got {rec["epoch"]!r}')
        if previous is not None and rec['iter'] < previous:
            fail(f'{where}.iter is {rec["iter"]}, before the previous record ({previous}): records must be in '
                 'training order')
        if rec['iter'] > history['max_iters']:
            fail(f'{where}.iter is {rec["iter"]}, past max_iters ({history["max_iters"]})')
        previous = rec['iter']
        for key in COST_KEYS:
            if key in rec and (not _is_number(rec[key]) or rec[key] < 0):
                fail(f'{where}.{key} must be a number >= 0, got {rec[key]!r}')
        _check_changes(rec['grown'], f'{where}.grown', fail)
        _check_changes(rec['cut'], f'{where}.cut', fail)
        structure = rec.get('structure')
        if structure is not None:
            if (not isinstance(structure, dict) or structure.get('format') != STRUCTURE_FORMAT
                    or not isinstance(structure.get('blocks'), dict)):
                fail(f'{where}.structure is not an {STRUCTURE_FORMAT!r} dict with "blocks"')
        importances = rec.get('importances')
        if importances is not None:
            if not isinstance(importances, dict) or not all(
                    isinstance(v, dict) and all(_is_number(s) for s in v.values()) for v in importances.values()):
                fail(f'{where}.importances must be {{block: {{branch: number}}}}')


def history_from_records(records: Sequence[dict], max_iters: int, by_epoch: bool = False,
                         max_epochs: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                         source: str = '<records>') -> dict:
    """A validated history dict (:func:`~mmdyrep.core.history.make_history`) around bare ``records`` (e.g.
    ``checkpoint['dyrep']['history']``)."""
    history = make_history(list(records), bool(by_epoch), int(max_iters), max_epochs, input_shape or None)
    validate_history(history, source)
    return history


# ------------------------------------------------------------------ averages
def training_average(history: Mapping, key: str) -> float:
    """The paper's "Avg. FLOPs / params" (Tables 2-3): ``key`` averaged over ``[0, max_iters]``."""
    return time_average(history['records'], key, history['max_iters'])


# ------------------------------------------------------------------ structure
def flatten_structure(structure: Optional[Mapping]) -> Dict[str, List[str]]:
    """``{block path: [branch types]}`` for every block of an ``extract_structure`` dict, nested ones
    included (paths as ``model.named_modules()`` gives them: ``<conv>.origin``,
    ``<conv>.branches.1x1_kxk.kxk``), outer before inner."""
    found: Dict[str, List[str]] = {}

    def visit(path: str, desc: Mapping) -> None:
        found[path] = list(desc['branches'])
        if desc.get('origin') is not None:
            visit(f'{path}.origin', desc['origin'])
        for branch, slots in desc['branches'].items():
            for slot, sub in slots.items():
                visit(f'{path}.branches.{branch}.{slot}', sub)

    for path, desc in ((structure or {}).get('blocks') or {}).items():
        visit(path, desc)
    return found


def grown_conv(block_path: str) -> str:
    """The outermost conv a block path belongs to (``layer1.0.conv2.origin`` -> ``layer1.0.conv2``)."""
    for marker in ('.origin', '.branches.'):
        if marker in block_path:
            block_path = block_path[:block_path.index(marker)]
    return block_path


# ------------------------------------------------------------------ summary
def summary(history: Mapping) -> dict:
    """What happened in a run: which convs grew when (and with which branches), what was cut,
    params / FLOPs at the start, now and averaged over the whole run, and the blocks now."""
    records = history['records']
    first, last = records[0], records[-1]
    grown, cut = [], []
    for rec in records:
        for conv, branches in rec['grown'].items():
            grown.append({'conv': conv, 'iter': rec['iter'], 'epoch': rec['epoch'], 'branches': list(branches)})
        for block, branches in rec['cut'].items():
            cut.append({'block': block, 'iter': rec['iter'], 'epoch': rec['epoch'], 'branches': list(branches)})
    keys = [k for k in COST_KEYS if all(k in rec for rec in records)]
    average = {k: training_average(history, k) for k in keys}
    ratio = {}
    for k in ('params', 'flops'):
        if k in average and f'deployed_{k}' in last and last[f'deployed_{k}']:
            ratio[k] = average[k] / last[f'deployed_{k}']
    return {
        'by_epoch': history['by_epoch'],
        'max_iters': history['max_iters'],
        'max_epochs': history.get('max_epochs'),
        'input_shape': history.get('input_shape'),
        'num_updates': len(records) - 1,
        'grown': grown,
        'cut': cut,
        'blocks_now': flatten_structure(last.get('structure')),
        'start': {k: first[k] for k in keys},
        'now': {k: last[k] for k in keys},
        'average': average,
        'average_vs_deployed': ratio,
    }


def _when(item: Mapping, by_epoch: bool) -> str:
    return f'epoch {item["epoch"]} (iter {item["iter"]})' if by_epoch else f'iter {item["iter"]}'


def format_summary(info: Mapping) -> str:
    """:func:`summary` as readable lines."""

    def m(v):
        return f'{v / 1e6:.2f}M'

    def g(v):
        return f'{v / 1e9:.3f}G'

    by_epoch = info['by_epoch']
    span = (f'{info["max_epochs"]} epochs / ' if by_epoch and info.get('max_epochs') else '') + \
        f'{info["max_iters"]} iters'
    lines = [f'DyRep history: {info["num_updates"]} updates over {span}']
    events = [(g['iter'], 0, f'{_when(g, by_epoch)}: grew {g["conv"]} <- {", ".join(g["branches"])}')
              for g in info['grown']]
    events += [(c['iter'], 1, f'{_when(c, by_epoch)}: cut {c["block"]} -x {", ".join(c["branches"])}')
               for c in info['cut']]
    lines += [f'  {text}' for _, _, text in sorted(events, key=lambda e: (e[0], e[1]))]
    if not info['grown'] and not info['cut']:
        lines.append('  no conv grew')
    blocks = info['blocks_now']
    lines.append(f'blocks now ({len(blocks)}):' if blocks else 'blocks now: none (plain backbone)')
    for path, branches in blocks.items():
        lines.append(f'  {path}: origin + {", ".join(branches) if branches else "(no branches left)"}')
    now, avg, start = info['now'], info['average'], info['start']
    shape = 'x'.join(map(str, info['input_shape'])) if info.get('input_shape') else '?'
    if 'params' in now:
        lines.append(f'backbone params: start {m(start["params"])}, now {m(now["params"])}, '
                     f'training average {m(avg["params"])}')
    if 'flops' in now:
        lines.append(f'backbone FLOPs (conv+linear MACs, input {shape}): start {g(start["flops"])}, '
                     f'now {g(now["flops"])}, training average {g(avg["flops"])}')
    if 'deployed_params' in now:
        lines.append(f'deployed: {m(now["deployed_params"])} params, {g(now["deployed_flops"])} FLOPs')
    for k, r in info['average_vs_deployed'].items():
        lines.append(f'average {k} / deployed {k}: {r:.3f}')
    return '\n'.join(lines)


__all__ = [
    'COST_KEYS', 'FORMAT', 'HISTORY_FILE', 'HistoryError', 'VERSION', 'flatten_structure', 'format_summary',
    'grown_conv', 'history_from_records', 'history_path', 'load_history', 'summary', 'time_average',
    'training_average', 'validate_history'
]
