"""The synthetic datasets load through the real mmdet / mmseg / mmpretrain dataset classes."""
import json
import os
import os.path as osp
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mmdyrep.datasets import (CITYSCAPES_PALETTE, COLOUR_FAMILIES, MARKER_NAME,
                              make_cityscapes, make_coco, make_imagenet)

COCO_KW = dict(num_train=6, num_val=3, img_size=(160, 128), seed=3)
CITY_KW = dict(num_train=4, num_val=2, img_size=(256, 128), seed=3)
INET_KW = dict(num_train_per_class=3, num_val_per_class=2, img_size=32, seed=3)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp('coco') / 'coco', **COCO_KW)


@pytest.fixture(scope='module')
def cityscapes(tmp_path_factory):
    return make_cityscapes(tmp_path_factory.mktemp('city') / 'cityscapes', **CITY_KW)


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return make_imagenet(tmp_path_factory.mktemp('inet') / 'imagenet', **INET_KW)


def _load_json(info, split):
    with open(osp.join(info['root'], info[f'{split}_ann_file'])) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------- COCO
def test_coco_layout_and_fields(coco):
    root = coco['root']
    assert coco['classes'] == ('square', 'circle', 'triangle')
    for split, num in (('train', 6), ('val', 3)):
        data = _load_json(coco, split)
        assert [c['id'] for c in data['categories']] == [1, 2, 3]
        assert [c['name'] for c in data['categories']] == list(coco['classes'])
        assert len(data['images']) == num == len(os.listdir(osp.join(root, f'{split}2017')))
        per_image = Counter(a['image_id'] for a in data['annotations'])
        assert set(per_image) == {im['id'] for im in data['images']}
        assert all(1 <= n <= 4 for n in per_image.values())
        for im in data['images']:
            assert (im['width'], im['height']) == (160, 128)
            with Image.open(osp.join(root, f'{split}2017', im['file_name'])) as img:
                assert img.format == 'JPEG' and img.size == (160, 128)
        for ann in data['annotations']:
            assert ann['iscrowd'] == 0 and ann['category_id'] in (1, 2, 3)
            x, y, w, h = ann['bbox']
            assert x >= 0 and y >= 0 and x + w <= 160 and y + h <= 128
            assert 128 / 6 - 3 <= max(w, h) <= 128 / 3 * 1.2 + 3
            assert 0 < ann['area'] <= w * h
            poly = np.array(ann['segmentation'][0]).reshape(-1, 2)
            assert len(poly) >= 3
            assert np.allclose(poly.min(0), [x, y], atol=1.5)
            assert np.allclose(poly.max(0), [x + w, y + h], atol=1.5)


def test_coco_mmdet_dataset(coco):
    from mmdet.datasets import CocoDataset

    for split in ('train', 'val'):
        ds = CocoDataset(
            data_root=coco['root'], ann_file=coco[f'{split}_ann_file'],
            data_prefix=dict(img=coco[f'{split}_img_prefix']),
            metainfo=dict(classes=coco['classes']), pipeline=[],
            test_mode=split == 'val')
        data = _load_json(coco, split)
        assert len(ds) == coco[f'num_{split}'] == len(data['images'])
        assert ds.metainfo['classes'] == coco['classes']
        for i in range(len(ds)):
            info = ds[i]
            assert osp.isfile(info['img_path'])
            anns = [a for a in data['annotations'] if a['image_id'] == info['img_id']]
            assert len(info['instances']) == len(anns) > 0
            for inst, ann in zip(info['instances'], anns):
                x, y, w, h = ann['bbox']
                assert inst['bbox'] == pytest.approx([x, y, x + w, y + h])
                assert inst['bbox_label'] == ann['category_id'] - 1
                assert inst['ignore_flag'] == 0


def test_coco_pycocotools(coco):
    from pycocotools.coco import COCO

    api = COCO(osp.join(coco['root'], coco['train_ann_file']))
    assert sorted(api.getCatIds()) == [1, 2, 3]
    assert len(api.getImgIds()) == 6
    assert len(api.getAnnIds()) == coco['num_train_instances']
    for ann in api.loadAnns(api.getAnnIds()):
        mask = api.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        # the polygon rasterised by pycocotools matches the drawn shape
        assert abs(mask.sum() - ann['area']) <= 0.12 * ann['area'] + 10
        assert abs(xs.min() - x) <= 1.5 and abs(ys.min() - y) <= 1.5
        assert abs(xs.max() + 1 - (x + w)) <= 1.5 and abs(ys.max() + 1 - (y + h)) <= 1.5


def _colour_mask(img, colour, tol=45):
    return np.abs(img.astype(np.int16) - np.asarray(colour, np.int16)).max(-1) <= tol


def test_coco_boxes_are_tight(coco):
    root = coco['root']
    data = _load_json(coco, 'train')
    checked = 0
    for im in data['images']:
        img = np.asarray(Image.open(osp.join(root, 'train2017', im['file_name'])).convert('RGB'))
        hh, ww = img.shape[:2]
        anns = [a for a in data['annotations'] if a['image_id'] == im['id']]
        for ann in anns:
            x, y, w, h = ann['bbox']
            colour = COLOUR_FAMILIES[ann['category_id'] - 1][1]
            hit = _colour_mask(img, colour)
            inside = hit[y:y + h, x:x + w]
            # the shape fills a good part of its box and touches all four box edges
            assert inside.mean() > 0.35
            assert inside[:2].any() and inside[-2:].any()
            assert inside[:, :2].any() and inside[:, -2:].any()
            # no class colour in a ring 2..10 px outside the box (other objects excluded)
            ring = np.zeros_like(hit)
            ring[max(0, y - 10):y + h + 10, max(0, x - 10):x + w + 10] = True
            ring[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2] = False
            for other in anns:
                if other is not ann:
                    ox, oy, ow, oh = other['bbox']
                    ring[oy:oy + oh, ox:ox + ow] = False
            assert not (hit & ring).any()
            checked += 1
        # the background itself never looks like any class colour
        covered = np.zeros((hh, ww), bool)
        for ann in anns:
            x, y, w, h = ann['bbox']
            covered[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2] = True
        for _, colour in COLOUR_FAMILIES[:3]:
            assert not (_colour_mask(img, colour) & ~covered).any()
    assert checked == coco['num_train_instances']


def test_coco_deterministic(tmp_path, coco):
    again = make_coco(tmp_path / 'again', **COCO_KW)
    other = make_coco(tmp_path / 'other', **dict(COCO_KW, seed=4))
    for rel in ('annotations/instances_train2017.json', 'annotations/instances_val2017.json',
                'train2017/000000000001.jpg', 'val2017/000000000003.jpg'):
        with open(osp.join(coco['root'], rel), 'rb') as f1, \
                open(osp.join(again['root'], rel), 'rb') as f2:
            assert f1.read() == f2.read(), rel
    with open(osp.join(coco['root'], coco['train_ann_file']), 'rb') as f1, \
            open(osp.join(other['root'], other['train_ann_file']), 'rb') as f2:
        assert f1.read() != f2.read()


# ----------------------------------------------------------------------------------- markers
def test_marker_second_call_is_noop(tmp_path):
    info = make_coco(tmp_path / 'c', num_train=2, num_val=1, img_size=(96, 96))
    assert info['skipped'] is False
    assert osp.isfile(osp.join(info['root'], MARKER_NAME))
    img = osp.join(info['root'], 'train2017', '000000000001.jpg')
    with open(img, 'ab') as f:  # a regeneration would overwrite this
        f.write(b'tampered')
    size = osp.getsize(img)
    again = make_coco(tmp_path / 'c', num_train=2, num_val=1, img_size=(96, 96))
    assert again['skipped'] is True
    assert osp.getsize(img) == size
    assert {k: v for k, v in again.items() if k != 'skipped'} == \
        {k: v for k, v in info.items() if k != 'skipped'}


def test_marker_changed_params_regenerate_inside_root(tmp_path):
    root = tmp_path / 'c'
    make_coco(root, num_train=3, num_val=1, img_size=(96, 96))
    (root / 'notes.txt').write_text('user file')
    info = make_coco(root, num_train=2, num_val=1, img_size=(96, 96))
    assert info['skipped'] is False
    assert sorted(os.listdir(root / 'train2017')) == ['000000000001.jpg', '000000000002.jpg']
    assert (root / 'notes.txt').read_text() == 'user file'
    assert len(_load_json(info, 'train')['images']) == 2


def test_refuses_foreign_non_empty_dir(tmp_path):
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'precious.txt').write_text('keep me')
    for fn in (make_coco, make_cityscapes, make_imagenet):
        with pytest.raises(ValueError, match=str(root)):
            fn(root)
    assert os.listdir(root) == ['precious.txt']
    # an existing empty directory is fine
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert make_imagenet(empty, num_train_per_class=1, num_val_per_class=1,
                         img_size=16)['num_train'] == 4


def test_refuses_other_kind(tmp_path):
    info = make_imagenet(tmp_path / 'i', num_train_per_class=1, num_val_per_class=1,
                         img_size=16)
    with pytest.raises(ValueError, match='imagenet'):
        make_coco(info['root'], num_train=1, num_val=1)
    assert osp.isfile(osp.join(info['root'], 'meta', 'train.txt'))


# ---------------------------------------------------------------------------------- Cityscapes
def test_cityscapes_layout(cityscapes):
    root = cityscapes['root']
    imgs = sorted(
        osp.join(dp, f) for dp, _, fs in os.walk(osp.join(root, 'leftImg8bit')) for f in fs)
    assert len(imgs) == 6
    cities = {osp.basename(osp.dirname(p)) for p in imgs if '/train/' in p}
    assert cities == {'aachen', 'bremen'}
    for p in imgs:
        stem = osp.basename(p)[:-len('_leftImg8bit.png')]
        city, seq, frame = stem.split('_')
        assert city == osp.basename(osp.dirname(p)) and len(seq) == len(frame) == 6
        gt = p.replace(osp.join(root, 'leftImg8bit'), osp.join(root, 'gtFine')).replace(
            '_leftImg8bit.png', '_gtFine_labelTrainIds.png')
        with Image.open(p) as im, Image.open(gt) as lab:
            assert im.mode == 'RGB' and im.size == (256, 128)
            assert lab.mode == 'L' and lab.size == (256, 128)


def test_cityscapes_mmseg_dataset(cityscapes):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import CityscapesDataset
    from mmseg.datasets.transforms import LoadAnnotations

    for split in ('train', 'val'):
        ds = CityscapesDataset(
            data_root=cityscapes['root'],
            data_prefix=dict(img_path=f'leftImg8bit/{split}', seg_map_path=f'gtFine/{split}'),
            pipeline=[LoadImageFromFile(), LoadAnnotations()])
        assert len(ds) == cityscapes[f'num_{split}']
        seen = set()
        for i in range(len(ds)):
            out = ds[i]
            seg = out['gt_seg_map']
            img = out['img']  # BGR
            assert seg.shape == img.shape[:2] == (128, 256)
            values = set(np.unique(seg).tolist())
            assert values <= set(range(19)) | {255}
            assert len(values - {255}) >= 5
            assert seg[0].tolist().count(10) > 0  # sky at the top
            assert (seg[-20:] == 0).mean() > 0.2  # road at the bottom
            seen |= values
            # each class is drawn in (roughly) its Cityscapes palette colour
            rgb = img[..., ::-1].astype(np.float64)
            for cls in values - {255}:
                mean = rgb[seg == cls].mean(0)
                assert np.abs(mean - CITYSCAPES_PALETTE[cls]).max() < 45, (cls, mean)
        assert {0, 1, 2, 10, 13} <= seen


def test_cityscapes_deterministic(tmp_path, cityscapes):
    again = make_cityscapes(tmp_path / 'again', **CITY_KW)
    rel = 'gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png'
    rel_img = 'leftImg8bit/train/bremen/bremen_000000_000020_leftImg8bit.png'
    for r in (rel, rel_img):
        with open(osp.join(cityscapes['root'], r), 'rb') as f1, \
                open(osp.join(again['root'], r), 'rb') as f2:
            assert f1.read() == f2.read(), r


# ------------------------------------------------------------------------------------ ImageNet
def test_imagenet_meta_files(imagenet):
    root = imagenet['root']
    classes = imagenet['classes']
    with open(osp.join(root, 'meta', 'classes.txt')) as f:
        assert tuple(f.read().split()) == classes
    for split, per_class in (('train', 3), ('val', 2)):
        with open(osp.join(root, 'meta', f'{split}.txt')) as f:
            lines = [ln.split() for ln in f.read().splitlines()]
        assert len(lines) == per_class * len(classes)
        for rel, label in lines:
            assert rel.split('/')[0] == classes[int(label)]
            with Image.open(osp.join(root, split, rel)) as im:
                assert im.format == 'JPEG' and im.size == (32, 32)


def test_imagenet_mmpretrain_dataset(imagenet):
    from mmpretrain.datasets import CustomDataset, ImageNet

    classes = imagenet['classes']
    for split, per_class in (('train', 3), ('val', 2)):
        ds = ImageNet(data_root=imagenet['root'], split=split, metainfo=dict(classes=classes),
                      pipeline=[])
        assert ds.ann_file.endswith(osp.join('meta', f'{split}.txt'))
        assert len(ds) == per_class * len(classes) == imagenet[f'num_{split}']
        assert ds.CLASSES == classes
        labels = ds.get_gt_labels()
        assert Counter(labels.tolist()) == {i: per_class for i in range(len(classes))}
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            assert osp.basename(osp.dirname(info['img_path'])) == classes[info['gt_label']]
            assert osp.isfile(info['img_path'])

    # the explicit form, and the class list file as `classes`
    ds = CustomDataset(data_root=imagenet['root'], data_prefix='train',
                       ann_file='meta/train.txt',
                       classes=osp.join(imagenet['root'], 'meta', 'classes.txt'))
    assert ds.CLASSES == classes and len(ds) == imagenet['num_train']
    # folder scanning (no ann_file) finds the same images, labelled in folder (sorted) order
    ds = CustomDataset(data_root=imagenet['root'], data_prefix='train')
    assert len(ds) == imagenet['num_train'] and ds.CLASSES == tuple(sorted(classes))


def test_imagenet_shapes_differ_by_class(imagenet):
    """Foreground masks (saturated pixels) have class-specific fill ratios: learnable by shape."""
    root = imagenet['root']
    fill = {}
    for cls in imagenet['classes']:
        ratios = []
        for name in sorted(os.listdir(osp.join(root, 'train', cls))):
            img = np.asarray(Image.open(osp.join(root, 'train', cls, name)).convert('RGB'))
            img = img.astype(np.int16)
            fg = (img.max(-1) - img.min(-1)) > 60
            ys, xs = np.nonzero(fg)
            assert len(xs) > 20, name
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            ratios.append(fg.sum() / box)
        fill[cls] = np.mean(ratios)
    # a (slightly rotated) square fills ~0.7-1 of its box, a circle ~pi/4, a triangle ~1/2,
    # a star ~0.4
    assert min(fill['square'], fill['circle']) > 0.62
    assert 0.56 > fill['triangle'] > fill['star'] + 0.04
    assert fill['star'] < 0.47


def test_imagenet_deterministic(tmp_path, imagenet):
    again = make_imagenet(tmp_path / 'again', **INET_KW)
    for rel in ('meta/train.txt', 'train/star/star_0002.JPEG', 'val/circle/circle_0001.JPEG'):
        with open(osp.join(imagenet['root'], rel), 'rb') as f1, \
                open(osp.join(again['root'], rel), 'rb') as f2:
            assert f1.read() == f2.read(), rel


def test_default_sizes_are_fast(tmp_path):
    import time

    start = time.perf_counter()
    c = make_coco(tmp_path / 'coco')
    s = make_cityscapes(tmp_path / 'cityscapes')
    i = make_imagenet(tmp_path / 'imagenet')
    assert time.perf_counter() - start < 10
    assert (c['num_train'], c['num_val'], s['num_train'], s['num_val']) == (24, 8, 8, 4)
    assert (i['num_train'], i['num_val']) == (48, 16)
