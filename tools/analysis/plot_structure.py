"""Draw the evolved structure of a DyRep run.

    python tools/analysis/plot_structure.py CHECKPOINT_OR_WORKDIR --out DIR [--conv NAME ...]

CHECKPOINT_OR_WORKDIR: an mmengine checkpoint (``.pth``; loaded with ``weights_only=True``), a
work dir holding ``dyrep_history.json``, or that JSON file itself. Writes into DIR:

* ``overview.png`` — which convs grew when, what was cut, params / FLOPs over training (when a
  history is available: the work dir, or a checkpoint saved by the DyRepHook) and the
  importance of every branch now;
* ``block_<conv>.png`` — for each grown conv (or each ``--conv``), its branch tree with the
  importance ``s`` of each branch, like the paper's Fig. 6.

It also prints the run summary (grows, cuts, params / FLOPs now and averaged over training).
"""
import argparse
import os
import os.path as osp
import sys

from mmdyrep.cli.runner_setup import add_debug, answer_errors, fail  # first: before mmengine is imported
from mmdyrep.analysis.history import format_summary, summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Plot the structure of a DyRep run (Fig. 6 and an overview)')
    parser.add_argument('source', metavar='CHECKPOINT_OR_WORKDIR',
                        help='checkpoint (.pth), work dir with dyrep_history.json, or that JSON file')
    parser.add_argument('--out', required=True, help='directory for the PNG files')
    parser.add_argument('--conv', nargs='+', default=None, metavar='NAME',
                        help='block(s) to draw (e.g. layer4.0.conv2; nested ones too); default: every grown conv')
    parser.add_argument('--dpi', type=int, default=130)
    add_debug(parser)
    return parser.parse_args(argv)


def plot(argv=None) -> None:
    args = parse_args(argv)
    from mmdyrep.analysis.plot import find_block, load_run, outermost_blocks, plot_block, plot_overview
    if osp.exists(args.out) and not osp.isdir(args.out):
        fail(f'--out must name a directory; {args.out} is a file: choose another --out')
    run = load_run(args.source)
    names = args.conv if args.conv else outermost_blocks(run.structure)
    for name in names:
        find_block(run.structure, name)  # an unknown --conv: a HistoryError naming the blocks, nothing written
    os.makedirs(args.out, exist_ok=True)
    written = []
    path = osp.join(args.out, 'overview.png')
    plot_overview(run, out=path)
    written.append(path)
    for name in names:
        path = osp.join(args.out, f'block_{name}.png')
        plot_block(run.structure, name, run.importances, out=path, dpi=args.dpi)
        written.append(path)
    if run.history is not None:
        print(format_summary(summary(run.history)))
    else:
        print(f'{run.name}: {len(run.structure.get("blocks") or {})} grown convs (no history in this checkpoint)')
    for path in written:
        print(f'wrote {path}')


def main(argv=None) -> int:
    """:func:`plot`; 0, or 1 after one line ``error: ...`` on stderr (bad input, nothing written; the
    traceback with ``--debug``)."""
    return answer_errors(plot, argv)


if __name__ == '__main__':
    sys.exit(main())
