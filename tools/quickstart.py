#!/usr/bin/env python
"""The quick start: DyRep on a real detector, end to end, on a CPU in a few minutes.

1. generate a small synthetic COCO (coloured shapes, 3 classes) unless it is there;
2. train Faster R-CNN R50-FPN with a DyRep backbone from scratch
   (configs/tiny/faster-rcnn_dyrep_r50_fpn_synthetic-coco.py; DyRep grows a conv every epoch);
3. evaluate it (COCO bbox mAP);
4. show what the backbone's structure became (which convs grew which branches, what was cut);
5. deploy it to a plain ResNet with tools/deploy.py (verified: same outputs), and evaluate the
   stock detector on the deployed checkpoint (same mAP);
6. print where everything went.

    python tools/quickstart.py [--work-dir work_dirs/quickstart] [--data-root data/synthetic/coco] [--verbose]

The console shows the steps, one line per training log interval (epoch, iteration, loss, ETA), every
DyRep update and the results; everything the tools print (config dumps, library notes) goes to
WORK_DIR/quickstart.log. ``--verbose`` shows it all on the console instead.
"""
import argparse
import contextlib
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
import warnings

TOOLS = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(TOOLS)

from mmdyrep.cli.runner_setup import fail, run_main  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'tiny', 'faster-rcnn_dyrep_r50_fpn_synthetic-coco.py')
DATA_ENV = 'MMDYREP_COCO_ROOT'
MAP_KEY = 'coco/bbox_mAP'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='DyRep quick start: synthetic COCO -> train -> eval -> deploy')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'quickstart'), help='where outputs go')
    parser.add_argument('--data-root', default=osp.join('data', 'synthetic', 'coco'),
                        help='synthetic COCO (generated when missing)')
    parser.add_argument('--num-train', type=int, default=32, help='training images to generate')
    parser.add_argument('--num-val', type=int, default=12, help='validation images to generate')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='the tiny training config')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='passed to tools/train.py and tools/test.py (e.g. train_cfg.max_epochs=2)')
    parser.add_argument('--verbose', action='store_true',
                        help='everything the tools print on the console (default: to WORK_DIR/quickstart.log)')
    return parser.parse_args(argv)


def banner(step: str) -> None:
    print(f'\n{"=" * 100}\n== {step}\n{"=" * 100}', flush=True)


#: the tools' output lines that reach the console without --verbose
CONSOLE = re.compile(r'Epoch\((train|val)\)|Iter\((train|val)\)|\[DyRep\]|verified|deployed:|Traceback|Error')
_PREFIX = re.compile(r'^\d\d/\d\d \d\d:\d\d:\d\d - mmengine - \w+ - ')
_TRAIN = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]')


def console_line(line: str) -> str:
    """A tool's output line as the quiet console shows it: a training log line as epoch, iteration,
    loss and ETA; anything else without mmengine's timestamp prefix."""
    line = _PREFIX.sub('', line.rstrip())
    m = _TRAIN.search(line)
    if m:
        loss = re.search(r'\bloss: ([\d.]+)', line)
        eta = re.search(r'\beta: (\S+)', line)
        return (f'  train epoch {m.group(1)} [{m.group(2)}/{m.group(3)}]' + (f'  loss {loss.group(1)}' if loss else '')
                + (f'  eta {eta.group(1)}' if eta else ''))
    return '  ' + line


def run_tool(args, env, log_path: str, verbose: bool) -> None:
    """Run a tool in a child process: all of its output to ``log_path`` and, filtered (:data:`CONSOLE`),
    to this terminal; everything to the terminal with ``verbose``."""
    cmd = [sys.executable] + args
    print('$ ' + ' '.join(cmd), flush=True)
    if verbose:
        returncode = subprocess.run(cmd, env=env, cwd=ROOT).returncode
    else:
        with open(log_path, 'a') as log, subprocess.Popen(
                cmd, env=dict(env, PYTHONWARNINGS='ignore'), cwd=ROOT, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            for line in proc.stdout:
                log.write(line)
                if CONSOLE.search(line):
                    print(console_line(line), flush=True)
            returncode = proc.wait()
    if returncode != 0:
        if not verbose:
            with open(log_path) as f:
                print(''.join(f.readlines()[-30:]), end='')
        fail(f'{osp.basename(args[0])} failed (exit code {returncode}); '
             + ('see its output above' if verbose else f'the last lines above, all of it in {log_path}'))


def evaluate(config: str, checkpoint: str, work_dir: str, cfg_options, log_path: str, verbose: bool) -> dict:
    """tools/test.py in this process (returns the metrics); its output to ``log_path`` unless ``verbose``."""
    spec = importlib.util.spec_from_file_location('mmdyrep_tools_test', osp.join(TOOLS, 'test.py'))
    test_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_tool)
    argv = [config, checkpoint, '--work-dir', work_dir]
    if cfg_options:
        argv += ['--cfg-options'] + list(cfg_options)
    print('$ python tools/test.py ' + ' '.join(argv), flush=True)
    if verbose:
        return test_tool.main(argv)
    with open(log_path, 'a') as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        metrics = test_tool.main(argv)
    print('  ' + ', '.join(f'{k} {v:.3f}' for k, v in metrics.items() if k.startswith('coco/bbox_mAP')
                           and isinstance(v, float)), flush=True)
    return metrics


def last_checkpoint(work_dir: str) -> str:
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
    found = sorted(glob.glob(osp.join(work_dir, 'epoch_*.pth')), key=lambda p: int(p.rsplit('_', 1)[1][:-4]))
    if not found:
        fail(f'training left no checkpoint in {work_dir}')
    return found[-1]


# ----------------------------------------------------------------------------- structure
def describe_block(name: str, block: dict, indent: str = '  ') -> list:
    cin, cout, k, stride, _, dilation, groups = block['spec']
    shape = f'{k}x{k} conv {cin}->{cout}' + (f', stride {stride}' if stride > 1 else '') + (
        f', dilation {dilation}' if dilation > 1 else '') + (f', groups {groups}' if groups > 1 else '')
    branches = list(block['branches'])
    lines = [f'{indent}{name} ({shape}): {k}x{k} origin + ' + (', '.join(branches) if branches else 'no branch')]
    if block.get('origin'):
        lines += describe_block(f'{name}.origin', block['origin'], indent + '    ')
    for branch, slots in block['branches'].items():
        for slot, sub in slots.items():
            lines += describe_block(f'{name}.{branch}.{slot}', sub, indent + '    ')
    return lines


def structure_from_checkpoint(checkpoint: str) -> dict:
    from mmdyrep.engine.compat import read_checkpoint
    from mmdyrep.core.structure import STRUCTURE_KEY, decode_structure
    state = read_checkpoint(checkpoint)['state_dict']
    key = 'backbone.' + STRUCTURE_KEY
    return decode_structure(state[key], key) if key in state else {'blocks': {}}


def show_structure(work_dir: str, checkpoint: str) -> int:
    """Print the evolution; returns the number of structure updates that changed something."""
    history_path = osp.join(work_dir, 'dyrep_history.json')
    updates = 0
    if osp.isfile(history_path):
        with open(history_path) as f:
            saved = json.load(f)
        records = saved['records']
        base = records[0]
        print(f'start: backbone {base["params"] / 1e6:.2f} M params, {base["flops"] / 1e9:.2f} GFLOPs '
              f'(conv + linear MACs at {"x".join(map(str, saved["input_shape"]))})')
        for rec in records[1:]:
            grown = '; '.join(f'{k} grew [{", ".join(v)}]' for k, v in rec['grown'].items()) or 'nothing grew'
            cut = '; '.join(f'{k} lost [{", ".join(v)}]' for k, v in rec['cut'].items()) or 'nothing cut'
            updates += bool(rec['grown'] or rec['cut'])
            print(f'epoch {rec["epoch"]:>2} (iter {rec["iter"]}): {grown}; {cut} -> '
                  f'{rec["params"] / 1e6:.2f} M params, {rec["flops"] / 1e9:.2f} GFLOPs')
        structure = records[-1]['structure']
        importances = records[-1].get('importances', {})
    else:
        print(f'({history_path} not found: the structure is read from the checkpoint)')
        structure, importances = structure_from_checkpoint(checkpoint), {}
        updates = len(structure['blocks'])
    blocks = structure.get('blocks', {})
    print(f'\nfinal structure: {len(blocks)} evolved convs in the backbone'
          + (' (the rest are still plain convs)' if blocks else ''))
    for name, block in blocks.items():
        print('\n'.join(describe_block(name, block)))
        if name in importances:
            shown = ', '.join(f'{b} {s:.6f}' for b, s in importances[name].items())
            print(f'      importance mean|gamma| of the branches: {shown}')
    return updates


# ---------------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.abspath(args.data_root)
    config = osp.abspath(args.config)
    if not osp.isfile(config):
        fail(f'config file not found: {config}')
    env = dict(os.environ, **{DATA_ENV: data_root})
    os.environ[DATA_ENV] = data_root  # for the evaluation in this process
    os.makedirs(work_dir, exist_ok=True)
    log_path = osp.join(work_dir, 'quickstart.log')
    verbose = args.verbose
    if not verbose:
        warnings.filterwarnings('ignore')  # library notes (deprecations) go nowhere; the tools' output to the log
        print(f'(the tools\' full output: {log_path}; --verbose shows it here)')
    timings = {}

    banner(f'1/5 synthetic COCO in {data_root}')
    t = time.time()
    from mmdyrep.datasets import make_coco
    try:
        info = make_coco(data_root, num_train=args.num_train, num_val=args.num_val)
    except ValueError as e:
        fail(f'cannot write the synthetic COCO: {e}')
    print(f"{'already there' if info['skipped'] else 'generated'}: {info['num_train']} train / {info['num_val']} val "
          f"images {info['img_size'][0]}x{info['img_size'][1]}, classes {', '.join(info['classes'])}")
    timings['data'] = time.time() - t

    banner(f'2/5 train Faster R-CNN R50-FPN with DyRep from scratch on the CPU ({osp.relpath(config, ROOT)})')
    t = time.time()
    train_args = [osp.join(TOOLS, 'train.py'), config, '--work-dir', work_dir]
    if args.cfg_options:
        train_args += ['--cfg-options'] + args.cfg_options
    run_tool(train_args, env, log_path, verbose)
    checkpoint = last_checkpoint(work_dir)
    timings['train'] = time.time() - t

    banner(f'3/5 evaluate {osp.relpath(checkpoint, ROOT) if checkpoint.startswith(ROOT) else checkpoint}')
    t = time.time()
    metrics = evaluate(config, checkpoint, osp.join(work_dir, 'test'), args.cfg_options, log_path, verbose)
    bbox_map = float(metrics.get(MAP_KEY, float('nan')))
    timings['eval'] = time.time() - t

    banner('4/5 what DyRep did to the backbone')
    updates = show_structure(work_dir, checkpoint)

    banner('5/5 deploy to a plain ResNet-50 (tools/deploy.py) and evaluate the stock detector')
    t = time.time()
    deploy_dir = osp.join(work_dir, 'deployed')
    deployed = osp.join(deploy_dir, 'faster-rcnn_r50_fpn_deployed.pth')
    val_images = sorted(glob.glob(osp.join(data_root, info['val_img_prefix'], '*.jpg')))
    deploy_args = [osp.join(TOOLS, 'deploy.py'), config, checkpoint, deployed]
    if val_images:
        deploy_args += ['--image', val_images[0]]
    run_tool(deploy_args, env, log_path, verbose)
    deployed_cfg = osp.splitext(deployed)[0] + '.py'
    deployed_metrics = evaluate(deployed_cfg, deployed, osp.join(deploy_dir, 'test'), [], log_path, verbose)
    deployed_map = float(deployed_metrics.get(MAP_KEY, float('nan')))
    timings['deploy'] = time.time() - t

    total = time.time() - start
    banner('done')
    print(f'bbox mAP (COCO, IoU 0.50:0.95) on {info["num_val"]} val images: {bbox_map:.3f} '
          f'(mAP@0.5 {metrics.get("coco/bbox_mAP_50", float("nan")):.3f}); '
          f'deployed plain ResNet-50: {deployed_map:.3f}')
    print(f'structure updates that changed the backbone: {updates}')
    print(f'time: {total / 60:.1f} min (' + ', '.join(f'{k} {v:.0f}s' for k, v in timings.items()) + ')')
    print('\nwhere everything went:')
    for label, path in (('data', data_root), ('work dir (logs, config)', work_dir),
                        ('the tools\' output', log_path), ('last checkpoint', checkpoint),
                        ('DyRep history', osp.join(work_dir, 'dyrep_history.json')),
                        ('deployed checkpoint', deployed), ('deployed config (stock ResNet)', deployed_cfg)):
        print(f'  {label:<32} {path}')
    print(f'\nnext: python tools/test.py {deployed_cfg} {deployed}   (no mmdyrep needed for this model)')
    if not bbox_map > 0:
        fail(f'the detector did not learn (bbox mAP {bbox_map}); something is wrong')
    if updates < 1:
        fail('DyRep made no structure update; something is wrong')
    if abs(deployed_map - bbox_map) > 0.01:
        fail(f'the deployed detector scores {deployed_map:.3f}, the evolved one {bbox_map:.3f}')


if __name__ == '__main__':
    run_main(main)
