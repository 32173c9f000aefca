#!/usr/bin/env python
"""Generate small synthetic datasets in the real COCO / Cityscapes / ImageNet formats.

Examples (from the repository root)::

    python tools/misc/make_synthetic_data.py coco data/coco
    python tools/misc/make_synthetic_data.py all data/synthetic --num-train 32 --seed 1

``all`` writes OUT_DIR/coco, OUT_DIR/cityscapes and OUT_DIR/imagenet. For imagenet the counts
are per class. Existing data generated with the same parameters is left as it is; a non-empty
directory that this tool did not write is refused.
"""
import argparse
import os.path as osp
import sys

try:
    import mmdyrep  # noqa: F401
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmdyrep.datasets import make_cityscapes, make_coco, make_imagenet  # noqa: E402

KINDS = ('coco', 'cityscapes', 'imagenet')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('kind', choices=KINDS + ('all', ), help='dataset format to generate')
    parser.add_argument('out_dir', help='output directory (for "all": its parent)')
    parser.add_argument('--num-train', type=int, default=None,
                        help='training images (imagenet: per class); default: the generator '
                        'default (coco 24, cityscapes 8, imagenet 12)')
    parser.add_argument('--num-val', type=int, default=None,
                        help='validation images (imagenet: per class); default: coco 8, '
                        'cityscapes 4, imagenet 4')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    return parser.parse_args(argv)


def generate(kind, root, num_train=None, num_val=None, seed=0):
    kwargs = dict(seed=seed)
    if kind == 'imagenet':
        names = ('num_train_per_class', 'num_val_per_class')
        fn = make_imagenet
    else:
        names = ('num_train', 'num_val')
        fn = make_coco if kind == 'coco' else make_cityscapes
    for name, value in zip(names, (num_train, num_val)):
        if value is not None:
            kwargs[name] = value
    return fn(root, **kwargs)


def describe(info):
    state = 'already up to date' if info['skipped'] else 'written'
    lines = [f"{info['kind']}: {info['root']} ({state})"]
    if info['kind'] == 'coco':
        lines += [
            f"  classes: {', '.join(info['classes'])}",
            f"  train: {info['num_train']} images, {info['num_train_instances']} instances "
            f"-> {info['train_ann_file']}, {info['train_img_prefix']}",
            f"  val:   {info['num_val']} images, {info['num_val_instances']} instances "
            f"-> {info['val_ann_file']}, {info['val_img_prefix']}",
        ]
    elif info['kind'] == 'cityscapes':
        lines += [
            f"  train: {info['num_train']} images -> {info['train_img_dir']}, "
            f"{info['train_ann_dir']} (cities: {', '.join(info['cities']['train'])})",
            f"  val:   {info['num_val']} images -> {info['val_img_dir']}, "
            f"{info['val_ann_dir']} (cities: {', '.join(info['cities']['val'])})",
            '  labels: *_gtFine_labelTrainIds.png (trainIds 0..18, 255 = ignore)',
        ]
    else:
        lines += [
            f"  classes: {', '.join(info['classes'])}",
            f"  train: {info['num_train']} images -> {info['train_data_prefix']}/, "
            f"{info['train_ann_file']}",
            f"  val:   {info['num_val']} images -> {info['val_data_prefix']}/, "
            f"{info['val_ann_file']}",
            f"  class list: {info['classes_file']}",
        ]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    kinds = KINDS if args.kind == 'all' else (args.kind, )
    for kind in kinds:
        root = osp.join(args.out_dir, kind) if args.kind == 'all' else args.out_dir
        try:
            info = generate(kind, root, args.num_train, args.num_val, args.seed)
        except ValueError as e:
            sys.exit(f'error: {e}')
        print(describe(info))


if __name__ == '__main__':
    main()
