"""Pictures of evolved DyRep structures (matplotlib, Agg backend).

* :func:`plot_block` — like the paper's Fig. 6: one conv's branch tree (the origin and each
  branch as a column of ops, nested blocks drawn recursively inside dashed frames), with the
  importance ``s`` of each branch (Eq. 9, mean ``|gamma|`` of its last BN) written under it.
* :func:`plot_overview` — the whole backbone: which convs grew at which iteration / epoch,
  which branches were cut, params / FLOPs over training (with their training averages) and
  the importances of the branches now.

Inputs come from :func:`load_run`: a work dir (or its ``dyrep_history.json``) or a
checkpoint (mmengine ``.pth`` with a ``state_dict``; the structure is the
``...dyrep_structure`` entry, importances come from each branch's last-BN weight, and the
history from ``checkpoint['dyrep']['history']`` when the DyRepHook saved it).
"""
import math
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle  # noqa: E402

from mmdyrep.core.branches import BRANCH_TYPES  # noqa: E402
from .history import (HistoryError, flatten_structure, history_from_records, history_path,  # noqa: E402
                      load_history, training_average)

STRUCTURE_SUFFIX = 'dyrep_structure'

# ------------------------------------------------------------------ inputs


@dataclass
class Run:
    """What the plots need from a run (see :func:`load_run`)."""

    name: str
    structure: dict
    importances: Dict[str, Dict[str, Optional[float]]] = field(default_factory=dict)
    history: Optional[dict] = None


def load_checkpoint(path: str) -> dict:
    """:func:`mmdyrep.engine.compat.read_checkpoint` (tensors and plain data only), its errors as
    :class:`HistoryError`."""
    from mmdyrep.engine.compat import CheckpointError, read_checkpoint
    try:
        return read_checkpoint(path)
    except CheckpointError as e:
        raise HistoryError(str(e)) from None


def structure_entry(state_dict: Mapping, source: str = '<state dict>') -> Tuple[str, Optional[dict]]:
    """``(prefix, structure)`` of the one DyRep backbone in a state dict (``structure`` is ``None`` when
    it was never evolved). Several backbones: an error naming them."""
    from mmdyrep.core.structure import decode_structure
    keys = [k for k in state_dict if k == STRUCTURE_SUFFIX or k.endswith('.' + STRUCTURE_SUFFIX)]
    if len(keys) > 1:
        raise HistoryError(f'{source}: several DyRep structures ({", ".join(keys)}); plot one model at a time')
    if not keys:
        return '', None
    key = keys[0]
    return key[:-len(STRUCTURE_SUFFIX)], decode_structure(state_dict[key], key)


def importances_from_state_dict(state_dict: Mapping, structure: dict, prefix: str = '') -> Dict[str, dict]:
    """Eq. 9 for every branch of every block: ``s = mean |gamma|`` of the branch's last BN
    (``<prefix><block>.branches.<type>.norm.weight``); ``None`` where the weight is missing."""
    found = {}
    for path, branches in flatten_structure(structure).items():
        found[path] = {}
        for branch in branches:
            weight = state_dict.get(f'{prefix}{path}.branches.{branch}.norm.weight')
            found[path][branch] = None if weight is None else float(weight.detach().abs().float().mean())
    return found


def load_run(path: str) -> Run:
    """A work dir / history JSON, or a checkpoint file, as a :class:`Run`."""
    if osp.isdir(path) or path.endswith('.json'):
        history = load_history(path)
        last = history['records'][-1]
        if last.get('structure') is None:
            raise HistoryError(f'{history_path(path)}: the last record has no structure to plot')
        name = osp.basename(osp.normpath(path if osp.isdir(path) else osp.dirname(osp.abspath(path))))
        return Run(name, last['structure'], last.get('importances') or {}, history)
    if not osp.isfile(path):
        raise HistoryError(f'{path}: no such checkpoint file or work dir')
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise HistoryError(f'{path}: expected a checkpoint dict, got {type(ckpt).__name__}')
    state = ckpt['state_dict'] if isinstance(ckpt.get('state_dict'), dict) else ckpt
    prefix, structure = structure_entry(state, path)
    records = (ckpt.get('dyrep') or {}).get('history') if isinstance(ckpt.get('dyrep'), dict) else None
    history = None
    if records:
        meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
        end = max(int(meta.get('iter', 0) or 0), records[-1]['iter'])
        history = history_from_records(records, end, source=f'{path} (checkpoint["dyrep"]["history"])')
    if structure is None:
        if history is None or history['records'][-1].get('structure') is None:
            raise HistoryError(f'{path}: no DyRep structure in the state dict (no key ending in '
                               f"'{STRUCTURE_SUFFIX}'): the backbone was never evolved, or the checkpoint is "
                               'deployed (plain ResNet)')
        structure = history['records'][-1]['structure']
    importances = importances_from_state_dict(state, structure, prefix)
    return Run(osp.splitext(osp.basename(path))[0], structure, importances, history)


# ------------------------------------------------------------------ Fig. 6: one block
BOX_W, BOX_H = 1.0, 0.42
GAP_V, GAP_H = 0.22, 0.28
PAD, TOP, FOOT, SUM = 0.18, 0.42, 0.46, 0.5
COLORS = {'conv': '#8ecae6', 'bn': '#ffd166', 'avg': '#95d5b2', 'identity': '#dddddd'}


def _sub(desc: Optional[dict]) -> Optional[dict]:
    return desc if desc else None


def _columns(desc: dict, k: int, path: str) -> List[Tuple[str, List[tuple]]]:
    """Per column (origin first): its name and its items, each ``('op', label, kind)`` or
    ``('block', desc, path)``."""
    kxk = f'{k}×{k}'

    def conv_or_block(sub, sub_path, label):
        return ('block', sub, sub_path) if sub else ('op', label, 'conv')

    cols = [('origin', [conv_or_block(_sub(desc.get('origin')), f'{path}.origin', f'{kxk} conv')])]
    for branch, slots in desc['branches'].items():
        if branch == '1x1_kxk':
            items = [('op', '1×1 conv', 'conv'), ('op', 'BN', 'bn'),
                     conv_or_block(_sub(slots.get('kxk')), f'{path}.branches.1x1_kxk.kxk', f'{kxk} conv'),
                     ('op', 'BN', 'bn')]
        elif branch == '1x1_avg':
            items = [('op', '1×1 conv', 'conv'), ('op', 'BN', 'bn'), ('op', f'{kxk} avg', 'avg'), ('op', 'BN', 'bn')]
        elif branch == '1x1':
            items = [('op', '1×1 conv', 'conv'), ('op', 'BN', 'bn')]
        elif branch == '1xk':
            items = [('op', f'1×{k} conv', 'conv'), ('op', 'BN', 'bn')]
        elif branch == 'kx1':
            items = [('op', f'{k}×1 conv', 'conv'), ('op', 'BN', 'bn')]
        elif branch == 'residual':
            items = [('op', 'identity', 'identity'), ('op', 'BN', 'bn')]
        else:
            items = [('op', branch, 'conv')]
        cols.append((branch, items))
    return cols


def _item_size(item, k) -> Tuple[float, float]:
    return (BOX_W, BOX_H) if item[0] == 'op' else _block_size(item[1], k, item[2])


def _column_size(items, k) -> Tuple[float, float]:
    sizes = [_item_size(it, k) for it in items]
    return max(w for w, _ in sizes), sum(h for _, h in sizes) + GAP_V * (len(sizes) - 1)


def _block_size(desc: dict, k: int, path: str) -> Tuple[float, float]:
    sizes = [_column_size(items, k) for _, items in _columns(desc, k, path)]
    width = sum(w for w, _ in sizes) + GAP_H * (len(sizes) - 1) + 2 * PAD
    height = TOP + max(h for _, h in sizes) + FOOT + SUM + PAD
    return width, height


class _Drawer:

    def __init__(self, ax, k: int, importances: Mapping[str, Mapping[str, Optional[float]]]):
        self.ax, self.k, self.importances = ax, k, importances

    def line(self, x0, y0, x1, y1, arrow=False):
        if arrow:
            self.ax.annotate('', xy=(x1, y1), xytext=(x0, y0),
                             arrowprops=dict(arrowstyle='-|>', lw=0.8, color='#444444', shrinkA=0, shrinkB=0))
        else:
            self.ax.plot([x0, x1], [y0, y1], color='#444444', lw=0.8, zorder=1)

    def op(self, cx, top, label, kind):
        box = FancyBboxPatch((cx - BOX_W / 2, top - BOX_H), BOX_W, BOX_H, boxstyle='round,pad=0,rounding_size=0.06',
                             facecolor=COLORS.get(kind, 'white'), edgecolor='#333333', lw=0.8, zorder=2)
        box.set_gid(f'op:{kind}')
        self.ax.add_patch(box)
        self.ax.text(cx, top - BOX_H / 2, label, ha='center', va='center', fontsize=8, zorder=3)

    def block(self, desc: dict, path: str, left: float, top: float, nested: bool) -> None:
        k = self.k
        width, height = _block_size(desc, k, path)
        frame = Rectangle((left, top - height), width, height, fill=nested, facecolor='#f7f7f7', edgecolor='#888888',
                          lw=0.8, ls='--' if nested else '-', zorder=0)
        frame.set_gid('block')
        self.ax.add_patch(frame)
        self.ax.text(left + 0.05, top - 0.05, path.rsplit('.', 1)[-1] if nested else path, ha='left', va='top',
                     fontsize=6.5, color='#666666', zorder=3)
        cx_block = left + width / 2
        split = top - TOP * 0.55
        self.ax.add_patch(Circle((cx_block, split), 0.04, color='#444444', zorder=3))
        cols = _columns(desc, k, path)
        sizes = [_column_size(items, k) for _, items in cols]
        body_h = max(h for _, h in sizes)
        sum_y = top - TOP - body_h - FOOT - SUM / 2
        scores = self.importances.get(path, {})
        known = [v for v in scores.values() if v is not None]
        best = max(known) if known else None
        x = left + PAD
        for (name, items), (cw, _) in zip(cols, sizes):
            cx = x + cw / 2
            y = top - TOP
            self.line(cx_block, split, cx, y, arrow=True)
            for i, item in enumerate(items):
                iw, ih = _item_size(item, k)
                if item[0] == 'op':
                    self.op(cx, y, item[1], item[2])
                else:
                    self.block(item[1], item[2], cx - iw / 2, y, nested=True)
                y -= ih
                if i + 1 < len(items):
                    self.line(cx, y, cx, y - GAP_V, arrow=True)
                    y -= GAP_V
            self.line(cx, y, cx, top - TOP - body_h, arrow=False)
            foot_y = top - TOP - body_h - 0.05
            if name == 'origin':
                self.ax.text(cx, foot_y, 'origin', ha='center', va='top', fontsize=7, style='italic', zorder=3)
            else:
                s = scores.get(name)
                text = self.ax.text(cx, foot_y, f'{name}\ns={s:.3g}' if s is not None else f'{name}\ns=?',
                                    ha='center', va='top', fontsize=7, zorder=3,
                                    fontweight='bold' if s is not None and s == best else 'normal')
                text.set_gid('importance')
            self.line(cx, top - TOP - body_h - FOOT, cx_block, sum_y + 0.12, arrow=True)
            x += cw + GAP_H
        circle = Circle((cx_block, sum_y), 0.12, facecolor='white', edgecolor='#333333', lw=0.8, zorder=3)
        circle.set_gid('sum')
        self.ax.add_patch(circle)
        self.ax.text(cx_block, sum_y, '+', ha='center', va='center', fontsize=9, zorder=4)


def find_block(structure: dict, path: str) -> dict:
    """The description of block ``path`` (outermost or nested) in an ``extract_structure`` dict."""
    blocks = structure.get('blocks') or {}
    for root, desc in blocks.items():
        if path == root:
            return desc
        if path.startswith(root + '.'):
            rest, node = path[len(root) + 1:].split('.'), desc
            try:
                while rest:
                    if rest[0] == 'origin':
                        node, rest = node['origin'], rest[1:]
                    elif rest[0] == 'branches':
                        node, rest = node['branches'][rest[1]][rest[2]], rest[3:]
                    else:
                        raise KeyError(rest[0])
            except (KeyError, IndexError, TypeError):
                break
            if node:
                return node
    known = ', '.join(flatten_structure(structure)) or 'none'
    raise HistoryError(f"'{path}' is not a DyRep block of this structure (blocks: {known})")


def plot_block(structure: dict, path: str, importances: Optional[Mapping] = None, out: Optional[str] = None,
               title: Optional[str] = None, dpi: int = 130):
    """Fig. 6 for block ``path``: its branch tree with each branch's importance ``s`` below it.

    Returns the figure (closed after saving when ``out`` is given). Artists carry gids:
    ``op:<kind>`` for op boxes, ``importance`` for the branch labels, ``block`` for each block
    frame (nested ones included), ``sum`` for the additions."""
    desc = find_block(structure, path)
    spec = desc['spec']
    k = spec[2]
    width, height = _block_size(desc, k, path)
    scale = 0.95
    fig, ax = plt.subplots(figsize=(min(max(width * scale, 4.0), 60.0), min(max((height + 0.6) * scale, 3.0), 60.0)))
    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(-height - 0.1, 0.5)
    ax.set_aspect('equal')
    ax.axis('off')
    _Drawer(ax, k, importances or {}).block(desc, path, 0.0, 0.0, nested=False)
    in_c, out_c, _, stride, padding, dilation, groups = spec
    head = title or (f'{path}: {k}×{k} conv {in_c}→{out_c}, stride {stride}, padding {padding}'
                     + (f', dilation {dilation}' if dilation != 1 else '')
                     + (f', groups {groups}' if groups != 1 else ''))
    ax.text(width / 2, 0.3, head + '   (s = mean |γ| of the branch\'s last BN)', ha='center', va='center',
            fontsize=9)
    fig.tight_layout()
    if out:
        _save(fig, out, dpi)
    return fig


# ------------------------------------------------------------------ overview
SHORT = {'1x1_kxk': 'KK', '1x1_avg': 'AVG', '1x1': '1', '1xk': '1K', 'kx1': 'K1', 'residual': 'id'}


def _abbrev(branches: Sequence[str]) -> str:
    return ' '.join(SHORT.get(b, b) for b in branches)


def _conv_order(name: str) -> tuple:
    """Network order for ResNet names (stem, layer1.0.conv1, ...); nested paths after their conv."""
    parts = []
    for p in name.split('.'):
        parts.append((0, int(p), '') if p.isdigit() else (1, 0, p))
    return tuple(parts)


def _alive_until(history: dict, path: str, since: int) -> int:
    """The iteration at which block ``path`` (grown at ``since``) stopped being a block (end of run if never)."""
    for rec in history['records']:
        if rec['iter'] <= since or rec.get('structure') is None:
            continue
        if path not in flatten_structure(rec['structure']):
            return rec['iter']
    return history['max_iters']


def plot_overview(run: Run, out: Optional[str] = None, dpi: int = 110):
    """The whole backbone: growth / cut timeline, params and FLOPs over training, importances now.

    Without a history (a checkpoint the hook did not annotate) only the importances panel is drawn."""
    history = run.history
    blocks_now = flatten_structure(run.structure)
    rows_now = sorted(blocks_now, key=_conv_order)
    panels = (['timeline', 'cost'] if history else []) + (['importance'] if rows_now else [])
    if not panels:
        panels = ['empty']
    grown_rows = []
    if history:
        for rec in history['records']:
            for conv in rec['grown']:
                if conv not in grown_rows:
                    grown_rows.append(conv)
            for block in rec['cut']:
                if block not in grown_rows:
                    grown_rows.append(block)
        grown_rows.sort(key=_conv_order)
    heights = {'timeline': max(2.0, 0.32 * len(grown_rows) + 1.2), 'cost': 2.6,
               'importance': max(1.8, 0.3 * len(rows_now) + 1.2), 'empty': 1.5}
    fig = plt.figure(figsize=(11, sum(heights[p] for p in panels) + 0.6))
    grid = fig.add_gridspec(len(panels), 2 if 'cost' in panels else 1,
                            height_ratios=[heights[p] for p in panels])
    row = 0
    if history:
        ax = fig.add_subplot(grid[row, :])
        row += 1
        end = max(history['max_iters'], 1)
        index = {name: i for i, name in enumerate(grown_rows)}
        for rec in history['records']:
            for conv, branches in rec['grown'].items():
                y = index[conv]
                until = _alive_until(history, conv, rec['iter'])
                ax.plot([rec['iter'], until], [y, y], color='#90be6d', lw=5, solid_capstyle='butt', zorder=1)
                ax.scatter([rec['iter']], [y], marker='^', color='#2d6a4f', s=40, zorder=3, gid='grow')
            for block, branches in rec['cut'].items():
                y = index[block]
                ax.scatter([rec['iter']], [y], marker='x', color='#d00000', s=40, zorder=3, gid='cut')
                ax.annotate(f'-{_abbrev(branches)}', (rec['iter'], y), xytext=(3, 5), textcoords='offset points',
                            fontsize=6.5, color='#d00000')
        for name in grown_rows:
            if name in blocks_now:
                ax.annotate(_abbrev(blocks_now[name]) or '(none)', (end, index[name]), xytext=(4, -3),
                            textcoords='offset points', fontsize=6.5, color='#2d6a4f', annotation_clip=False)
        ax.set_yticks(range(len(grown_rows)))
        ax.set_yticklabels(grown_rows, fontsize=7)
        ax.set_ylim(len(grown_rows) - 0.5 if grown_rows else 0.5, -0.5)
        ax.set_xlim(0, end)
        unit = 'iteration'
        if history['by_epoch'] and history.get('max_epochs'):
            per_epoch = history['max_iters'] / history['max_epochs']
            sec = ax.secondary_xaxis('top', functions=(lambda x: x / per_epoch, lambda e: e * per_epoch))
            sec.set_xlabel('epoch', fontsize=8)
            sec.tick_params(labelsize=7)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis='x', alpha=0.3)
        ax.set_title(f'{run.name}: grown convs (▲ grow, bar: block alive, ×: cut, with the branches removed)\n'
                     f'branches now at the right: {", ".join(f"{v}={k}" for k, v in SHORT.items())}', fontsize=8)
        if not grown_rows:
            ax.text(0.5, 0.5, 'no conv grew', transform=ax.transAxes, ha='center', va='center')
        # params / FLOPs
        for col, (key, unit_scale, unit_name) in enumerate((('params', 1e6, 'M params'), ('flops', 1e9, 'GFLOPs'))):
            ax = fig.add_subplot(grid[row, col])
            recs = [r for r in history['records'] if key in r]
            if not recs:
                ax.axis('off')
                continue
            xs = [r['iter'] for r in recs] + [end]
            ys = [r[key] / unit_scale for r in recs]
            ax.step(xs, ys + ys[-1:], where='post', color='#277da1', lw=1.5, label='training-time')
            avg = training_average(history, key) / unit_scale
            ax.axhline(avg, color='#f3722c', ls='--', lw=1, label=f'average {avg:.3g}')
            dkey = f'deployed_{key}'
            if all(dkey in r for r in recs):
                ax.axhline(recs[-1][dkey] / unit_scale, color='#555555', ls=':', lw=1,
                           label=f'deployed {recs[-1][dkey] / unit_scale:.3g}')
            ax.set_xlim(0, end)
            shape = history.get('input_shape')
            ax.set_title(f'backbone {unit_name}' + (f' (conv+linear MACs, {"x".join(map(str, shape))})'
                                                    if key == 'flops' and shape else ''), fontsize=8)
            ax.set_xlabel('iteration', fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7, loc='lower right')
            ax.grid(alpha=0.3)
        row += 1
    if rows_now:
        ax = fig.add_subplot(grid[row, :])
        types = [b for b in BRANCH_TYPES if any(b in v for v in blocks_now.values())]
        values = [[math.nan] * len(types) for _ in rows_now]
        for i, path in enumerate(rows_now):
            for j, b in enumerate(types):
                if b in blocks_now[path]:
                    s = (run.importances.get(path) or {}).get(b)
                    values[i][j] = s if s is not None else math.nan
        top = max([v for row in values for v in row if not math.isnan(v)], default=1.0) or 1.0
        for i, path in enumerate(rows_now):
            for j, b in enumerate(types):
                if b in blocks_now[path]:
                    s = values[i][j]
                    ax.text(j, i, '?' if math.isnan(s) else f'{s:.3g}', ha='center', va='center', fontsize=6.5,
                            color='white' if not math.isnan(s) and s > 0.55 * top else 'black', gid='importance')
        image = ax.imshow(values, aspect='auto', cmap='YlGn', vmin=0, vmax=top)
        ax.set_xticks(range(len(types)))
        ax.set_xticklabels(types, fontsize=7)
        ax.set_yticks(range(len(rows_now)))
        ax.set_yticklabels(rows_now, fontsize=7)
        ax.set_title('branches now and their importance s = mean |γ| of the last BN (Eq. 9); blank: no such branch',
                     fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    elif panels == ['empty']:
        ax = fig.add_subplot(grid[0, 0])
        ax.axis('off')
        ax.text(0.5, 0.5, f'{run.name}: no DyRep blocks', ha='center', va='center')
    fig.tight_layout()
    if out:
        _save(fig, out, dpi)
    return fig


def _save(fig, out: str, dpi: int) -> None:
    folder = osp.dirname(out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def outermost_blocks(structure: dict) -> List[str]:
    return sorted((structure.get('blocks') or {}), key=_conv_order)


__all__ = [
    'Run', 'find_block', 'importances_from_state_dict', 'load_checkpoint', 'load_run', 'outermost_blocks',
    'plot_block', 'plot_overview', 'structure_entry'
]
