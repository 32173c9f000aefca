"""Small synthetic datasets in the real on-disk formats of COCO, Cityscapes and ImageNet.

There are no dataset downloads on the machines this project is developed on, so the quick
start and the tests train and evaluate on tiny generated datasets instead. Their content is
easy to learn (coloured geometric shapes on a low-contrast textured background, or a
cartoon street scene in the Cityscapes palette), and the files are laid out exactly like
the real datasets, so the unmodified mmdet / mmseg / mmpretrain dataset classes read them:

* :func:`make_coco`: ``annotations/instances_{train,val}2017.json`` + ``{train,val}2017/*.jpg``
  (read by ``mmdet.datasets.CocoDataset`` with ``metainfo=dict(classes=...)``).
* :func:`make_cityscapes`: ``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` +
  ``gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png`` (``mmseg.datasets.CityscapesDataset``).
* :func:`make_imagenet`: ``{train,val}/<class>/*.JPEG`` + ``meta/{train,val,classes}.txt``
  (``mmpretrain.datasets.ImageNet`` / ``CustomDataset``).

Everything is deterministic given ``seed`` (every image has its own random stream derived from
``(seed, dataset, split, index)``). Only numpy, Pillow and json are used.

Safety: a generator writes only inside ``root``. It refuses (``ValueError``) to write into an
existing non-empty directory that it did not create, which it recognises by the marker file
``.mmdyrep_synthetic.json``, and to overwrite synthetic data of another kind (e.g. COCO into an
ImageNet directory). When the marker records the same parameters the call is a no-op; when they
differ, the entries listed in the marker (only inside ``root``) are removed and the data is
regenerated; other files in ``root`` are kept.
"""
import json
import math
import os
import os.path as osp
import shutil

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    'make_coco', 'make_cityscapes', 'make_imagenet', 'COCO_CLASSES', 'IMAGENET_CLASSES',
    'CITYSCAPES_CLASSES', 'CITYSCAPES_PALETTE', 'COLOUR_FAMILIES', 'SHAPES', 'MARKER_NAME'
]

MARKER_NAME = '.mmdyrep_synthetic.json'
# Bump whenever the generated content changes, so that old data on disk is regenerated.
FORMAT_VERSION = 1
_TOOL = 'mmdyrep.datasets.synthetic'

COCO_CLASSES = ('square', 'circle', 'triangle')
IMAGENET_CLASSES = ('square', 'circle', 'triangle', 'star')

# Colour family of the i-th COCO class (RGB base colour; each object gets +-COLOUR_JITTER).
COLOUR_FAMILIES = (
    ('red', (220, 40, 40)),
    ('green', (40, 200, 60)),
    ('blue', (40, 70, 220)),
    ('yellow', (230, 210, 40)),
    ('magenta', (210, 50, 200)),
    ('cyan', (40, 200, 210)),
    ('orange', (240, 130, 30)),
    ('purple', (120, 40, 180)),
)
COLOUR_JITTER = 20

# Shapes a class name can map to. Classes named like a shape get that shape; other names get
# the first shape not used by another class (in class order).
SHAPES = ('square', 'circle', 'triangle', 'star', 'pentagon', 'hexagon', 'diamond', 'ellipse',
          'rectangle', 'cross')

CITYSCAPES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                      'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                      'truck', 'bus', 'train', 'motorcycle', 'bicycle')
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
                      (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
                      (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
                      (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230),
                      (119, 11, 32))
IGNORE_INDEX = 255
# trainIds drawn by make_cityscapes.
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 8, 10, 11, 13

_DATASET_IDS = {'coco': 1, 'cityscapes': 2, 'imagenet': 3}
_SPLIT_IDS = {'train': 0, 'val': 1}
_JPEG_KW = dict(quality=95, subsampling=0)


# ---------------------------------------------------------------------------------------------
# marker / output-directory handling
# ---------------------------------------------------------------------------------------------
def _normalise(obj):
    """JSON round trip, so tuples and lists compare equal."""
    return json.loads(json.dumps(obj))


def _read_marker(root):
    path = osp.join(root, MARKER_NAME)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get('tool') != _TOOL:
        return None
    return marker


def _write_marker(root, marker):
    tmp = osp.join(root, MARKER_NAME + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(marker, f, indent=2, sort_keys=True)
    os.replace(tmp, osp.join(root, MARKER_NAME))


def _prepare_root(root, kind, params, outputs):
    """Return ``(root, result)``; ``result`` is not None when the data is already there.

    Raises ``ValueError`` for a ``root`` that is a file, a non-empty directory without our
    marker, or one whose marker is for another kind of dataset. Removes (inside ``root``
    only) the entries a previous run recorded in its marker when the parameters differ.
    """
    root = osp.abspath(osp.expanduser(os.fspath(root)))
    params = _normalise(params)
    if osp.exists(root) and not osp.isdir(root):
        raise ValueError(f'{root} exists and is not a directory')
    if osp.isdir(root) and os.listdir(root):
        marker = _read_marker(root)
        if marker is None:
            raise ValueError(
                f'{root} is a non-empty directory that was not written by {_TOOL} (no valid '
                f'{MARKER_NAME}); refusing to write into it. Choose an empty or new directory.')
        if marker.get('kind') != kind:
            raise ValueError(
                f"{root} holds synthetic {marker.get('kind')!r} data, not {kind!r}; refusing to "
                'overwrite it. Choose another directory.')
        if (marker.get('complete')
                and marker.get('format_version') == FORMAT_VERSION
                and marker.get('params') == params and isinstance(marker.get('result'), dict)
                and all(osp.exists(osp.join(root, p)) for p in outputs)):
            result = dict(marker['result'])
            result['root'] = root
            result['skipped'] = True
            if 'classes' in result:
                result['classes'] = tuple(result['classes'])
            return root, result
        # Different parameters (or an interrupted run): remove what that run wrote.
        for entry in marker.get('written', []):
            _remove_inside(root, entry)
    os.makedirs(root, exist_ok=True)
    _write_marker(
        root,
        dict(tool=_TOOL, kind=kind, format_version=FORMAT_VERSION, params=params,
             written=list(outputs), complete=False))
    return root, None


def _remove_inside(root, entry):
    """Remove ``root/entry`` if (and only if) it really lies inside ``root``."""
    if not isinstance(entry, str) or not entry or osp.isabs(entry):
        return
    path = osp.normpath(osp.join(root, entry))
    if osp.commonpath([root, path]) != root or path == root:
        return
    if osp.islink(path) or osp.isfile(path):
        os.unlink(path)
    elif osp.isdir(path):
        shutil.rmtree(path)


def _finish(root, kind, params, outputs, result):
    _write_marker(
        root,
        dict(tool=_TOOL, kind=kind, format_version=FORMAT_VERSION, params=_normalise(params),
             written=list(outputs), complete=True, result=_normalise(result)))
    result = dict(result)
    result['root'] = root
    result['skipped'] = False
    return result


def _rng(seed, kind, split, index):
    return np.random.default_rng([int(seed), _DATASET_IDS[kind], _SPLIT_IDS[split], int(index)])


def _uniform(rng, low, high):
    """``rng.uniform(low, high)`` that tolerates an empty interval (returns its middle)."""
    if high <= low:
        rng.random()  # keep the number of draws independent of the branch
        return (low + high) / 2.0
    return rng.uniform(low, high)


def _check_size(img_size, name='img_size'):
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    w, h = (int(v) for v in img_size)
    if w < 16 or h < 16:
        raise ValueError(f'{name} must be at least 16x16, got {img_size}')
    return w, h


def _check_count(value, name, minimum=0):
    if int(value) != value or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
    return int(value)


# ---------------------------------------------------------------------------------------------
# drawing helpers
# ---------------------------------------------------------------------------------------------
def _smooth_noise(rng, w, h, cells, channels=1):
    """Low-frequency noise in [-1, 1] of shape (h, w, channels): bilinear-upsampled random grid."""
    gw, gh = max(2, int(round(w / cells))), max(2, int(round(h / cells)))
    out = np.empty((h, w, channels), np.float32)
    for c in range(channels):
        grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
        out[..., c] = np.asarray(Image.fromarray(grid, mode='F').resize((w, h), Image.BILINEAR))
    return np.clip(out, -1, 1)


def _background(rng, w, h):
    """A random low-contrast, low-saturation textured background (float32 HxWx3)."""
    grey = rng.uniform(95, 165)
    tint = rng.uniform(-8, 8, 3)
    img = np.full((h, w, 3), grey, np.float32) + tint
    img += 14 * _smooth_noise(rng, w, h, cells=rng.uniform(12, 40))  # luminance blobs
    img += 4 * _smooth_noise(rng, w, h, cells=rng.uniform(20, 60), channels=3)  # faint colour
    # a faint gradient or stripe pattern
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    proj = xx * math.cos(angle) + yy * math.sin(angle)
    if rng.random() < 0.5:
        img += (8 * (proj / max(w, h) - 0.5))[..., None]
    else:
        period = rng.uniform(6, 20)
        img += (4 * np.sin(2 * math.pi * proj / period))[..., None]
    img += np.clip(rng.normal(0, 3, (h, w, 3)), -6, 6)
    return img


def _regular(n, radius, rotation, start=-math.pi / 2):
    angles = start + rotation + np.arange(n) * 2 * math.pi / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _rotate(points, rotation):
    c, s = math.cos(rotation), math.sin(rotation)
    return points @ np.array([[c, s], [-s, c]], np.float64)


def _shape_polygon(shape, size, rng):
    """Vertices (N, 2) centred on the origin of a shape whose extent is about ``size`` pixels."""
    r = size / 2.0
    if shape == 'square':
        pts = np.array([[-r, -r], [r, -r], [r, r], [-r, r]]) * 0.9
        return _rotate(pts, math.radians(rng.uniform(-15, 15)))
    if shape == 'circle':
        return _regular(48, r, 0.0)
    if shape == 'triangle':
        return _regular(3, r * 1.1, math.radians(rng.uniform(-20, 20)))
    if shape == 'star':
        rot = rng.uniform(0, 2 * math.pi / 5)
        pts = np.empty((10, 2))
        pts[0::2] = _regular(5, r * 1.05, rot)  # tips
        pts[1::2] = _regular(5, r * 0.45, rot + math.pi / 5)  # inner corners, half a step on
        return pts
    if shape == 'pentagon':
        return _regular(5, r, rng.uniform(0, 2 * math.pi / 5))
    if shape == 'hexagon':
        return _regular(6, r, rng.uniform(0, 2 * math.pi / 6))
    if shape == 'diamond':
        pts = np.array([[0, -r], [r * 0.7, 0], [0, r], [-r * 0.7, 0]])
        return _rotate(pts, math.radians(rng.uniform(-10, 10)))
    if shape == 'ellipse':
        t = np.arange(40) * 2 * math.pi / 40
        pts = np.stack([r * np.cos(t), 0.55 * r * np.sin(t)], axis=1)
        return _rotate(pts, rng.uniform(0, math.pi))
    if shape == 'rectangle':
        pts = np.array([[-r, -0.5 * r], [r, -0.5 * r], [r, 0.5 * r], [-r, 0.5 * r]])
        return _rotate(pts, math.radians(rng.uniform(-15, 15)))
    if shape == 'cross':
        a, b = r, r * 0.33
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                        [-b, b], [-a, b], [-a, -b], [-b, -b]])
        return _rotate(pts, math.radians(rng.uniform(-20, 20)))
    raise ValueError(f'unknown shape {shape!r}')


def _assign_shapes(classes, what):
    classes = tuple(str(c) for c in classes)
    if not classes:
        raise ValueError(f'{what}: classes must not be empty')
    if len(set(classes)) != len(classes):
        raise ValueError(f'{what}: duplicate class names in {classes}')
    if len(classes) > len(SHAPES):
        raise ValueError(f'{what}: at most {len(SHAPES)} classes are supported, got {len(classes)}')
    shapes = [c.lower() if c.lower() in SHAPES else None for c in classes]
    free = [s for s in SHAPES if s not in shapes]
    return classes, tuple(s if s is not None else free.pop(0) for s in shapes)


def _polygon_mask(points, w, h):
    mask = Image.new('L', (w, h), 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in points], fill=1)
    return np.asarray(mask, dtype=bool)


def _paint(img, mask, colour, rng, noise=3.0):
    n = int(mask.sum())
    img[mask] = np.asarray(colour, np.float32) + np.clip(rng.normal(0, noise, (n, 3)), -6, 6)


def _to_uint8(img):
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------
def _coco_image(rng, w, h, shapes, colours):
    """Draw one image; return (uint8 HxWx3, [dict(label, bbox, area, polygon)])."""
    img = _background(rng, w, h)
    num = int(rng.integers(1, 5))
    short = min(w, h)
    gap = max(4, short // 40)
    boxes, objects = [], []
    for _ in range(num):
        label = int(rng.integers(len(shapes)))
        for _attempt in range(40):
            size = rng.uniform(short / 6, short / 3)
            poly = _shape_polygon(shapes[label], size, rng)
            lo, hi = poly.min(0), poly.max(0)
            cx = _uniform(rng, 2 - lo[0], w - 3 - hi[0])
            cy = _uniform(rng, 2 - lo[1], h - 3 - hi[1])
            pts = poly + (cx, cy)
            x0, y0 = pts.min(0) - gap
            x1, y1 = pts.max(0) + gap
            if all(x1 < bx0 or bx1 < x0 or y1 < by0 or by1 < y0 for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue  # no free place for this object
        mask = _polygon_mask(pts, w, h)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        boxes.append((x0, y0, x1, y1))
        jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)
        colour = np.clip(np.asarray(colours[label]) + jitter, 0, 255)
        _paint(img, mask, colour, rng)
        bx, by = int(xs.min()), int(ys.min())
        bw, bh = int(xs.max()) - bx + 1, int(ys.max()) - by + 1
        objects.append(
            dict(label=label, bbox=[bx, by, bw, bh], area=int(mask.sum()),
                 polygon=[round(float(v), 2) for v in pts.reshape(-1)]))
    return _to_uint8(img), objects


def make_coco(root, num_train=24, num_val=8, img_size=(320, 256), seed=0,
              classes=COCO_CLASSES):
    """Write a small COCO-format detection dataset (mmdet layout) under ``root``.

    Layout::

        root/annotations/instances_train2017.json
        root/annotations/instances_val2017.json
        root/train2017/000000000001.jpg ...
        root/val2017/000000000001.jpg ...

    Each image (``img_size`` = (width, height)) holds 1-4 non-overlapping shapes with sizes
    of 1/6 to 1/3 of the shorter image side. The i-th class is drawn as the shape its name
    says (``square``, ``circle``, ``triangle``, ... see :data:`SHAPES`; other names get an
    unused shape) in the i-th colour family of :data:`COLOUR_FAMILIES` (red, green, blue, ...),
    +-20 per channel. ``bbox`` is tight around the drawn pixels, ``segmentation`` is the
    polygon, category ids start at 1 in the order of ``classes``.

    Returns a dict with ``root``, ``classes`` (for ``metainfo=dict(classes=...)``),
    ``palette``, ``shapes``, ``train_ann_file`` / ``val_ann_file`` / ``train_img_prefix`` /
    ``val_img_prefix`` (relative to root), ``num_train`` / ``num_val`` (images),
    ``num_train_instances`` / ``num_val_instances`` and ``skipped`` (True when the data was
    already there).
    """
    num_train = _check_count(num_train, 'num_train')
    num_val = _check_count(num_val, 'num_val')
    w, h = _check_size(img_size)
    classes, shapes = _assign_shapes(classes, 'make_coco')
    if len(classes) > len(COLOUR_FAMILIES):
        raise ValueError(f'make_coco: at most {len(COLOUR_FAMILIES)} classes are supported')
    colours = [COLOUR_FAMILIES[i][1] for i in range(len(classes))]
    params = dict(num_train=num_train, num_val=num_val, img_size=[w, h], seed=int(seed),
                  classes=list(classes))
    outputs = ['annotations', 'train2017', 'val2017']
    root, done = _prepare_root(root, 'coco', params, outputs)
    if done is not None:
        return done

    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=c, supercategory='shape') for i, c in enumerate(classes)]
    counts = {}
    for split, num in (('train', num_train), ('val', num_val)):
        img_dir = osp.join(root, f'{split}2017')
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            image_id = i + 1
            file_name = f'{image_id:012d}.jpg'
            img, objects = _coco_image(_rng(seed, 'coco', split, i), w, h, shapes, colours)
            Image.fromarray(img).save(osp.join(img_dir, file_name), **_JPEG_KW)
            images.append(dict(id=image_id, file_name=file_name, width=w, height=h))
            for obj in objects:
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=image_id,
                         category_id=obj['label'] + 1, bbox=obj['bbox'],
                         area=float(obj['area']), iscrowd=0, segmentation=[obj['polygon']]))
        coco = dict(
            info=dict(description=f'mmdyrep synthetic shapes ({split}, seed {seed})',
                      version='1.0', year=2017),
            licenses=[], images=images, annotations=annotations, categories=categories)
        with open(osp.join(root, 'annotations', f'instances_{split}2017.json'), 'w') as f:
            json.dump(coco, f)
        counts[split] = (len(images), len(annotations))

    result = dict(
        kind='coco', classes=list(classes), shapes=list(shapes),
        palette=[list(c) for c in colours], img_size=[w, h],
        train_ann_file='annotations/instances_train2017.json',
        val_ann_file='annotations/instances_val2017.json', train_img_prefix='train2017/',
        val_img_prefix='val2017/', num_train=counts['train'][0], num_val=counts['val'][0],
        num_train_instances=counts['train'][1], num_val_instances=counts['val'][1])
    result = _finish(root, 'coco', params, outputs, result)
    result['classes'] = tuple(result['classes'])
    return result


# ---------------------------------------------------------------------------------------------
# Cityscapes
# ---------------------------------------------------------------------------------------------
TRAIN_CITIES = ('aachen', 'bremen')
VAL_CITIES = ('frankfurt', )


def _city_scene(rng, w, h):
    """Return (label uint8 HxW of trainIds / 255, image uint8 HxWx3)."""
    label = Image.new('L', (w, h), SKY)
    draw = ImageDraw.Draw(label)
    horizon = int(h * rng.uniform(0.38, 0.5))

    # buildings: a row of blocks with random heights, gaps are sky or trees
    x = int(rng.uniform(-0.05, 0.05) * w)
    while x < w:
        bw = int(rng.uniform(0.08, 0.25) * w)
        if rng.random() < 0.8:
            top = int(h * rng.uniform(0.05, 0.3))
            draw.rectangle([x, top, x + bw - 1, horizon + 2], fill=BUILDING)
        x += bw + int(rng.uniform(0, 0.04) * w)
    # vegetation: a few trees (crown ellipse on a short trunk area) and hedges
    for _ in range(int(rng.integers(2, 5))):
        cx = rng.uniform(0, w)
        cw, ch = rng.uniform(0.05, 0.12) * w, rng.uniform(0.15, 0.3) * h
        cy = horizon - ch * rng.uniform(0.4, 0.9)
        draw.ellipse([cx - cw, cy - ch / 2, cx + cw, cy + ch / 2], fill=VEGETATION)
    if rng.random() < 0.7:
        hx = rng.uniform(0, 0.7) * w
        draw.rectangle([hx, horizon - 0.08 * h, hx + rng.uniform(0.1, 0.3) * w, horizon + 2],
                       fill=VEGETATION)

    # ground: sidewalk everywhere, then the road as a perspective trapezoid
    draw.rectangle([0, horizon, w, h], fill=SIDEWALK)
    vx = w * rng.uniform(0.4, 0.6)
    half_top = w * rng.uniform(0.02, 0.06)
    left_bottom = w * rng.uniform(-0.25, 0.15)
    right_bottom = w * rng.uniform(0.85, 1.25)
    road = [(vx - half_top, horizon + 1), (vx + half_top, horizon + 1), (right_bottom, h),
            (left_bottom, h)]
    draw.polygon(road, fill=ROAD)

    def road_x(y):  # road x-extent at row y
        t = (y - horizon) / max(1.0, h - horizon)
        return (vx - half_top + t * (left_bottom - vx + half_top),
                vx + half_top + t * (right_bottom - vx - half_top))

    # cars on the road: body + cabin, size grows towards the bottom (perspective)
    for _ in range(int(rng.integers(1, 4))):
        yb = rng.uniform(horizon + 0.15 * (h - horizon), h - 0.1 * (h - horizon))
        scale = (yb - horizon) / (h - horizon)
        cw, chh = (0.12 + 0.22 * scale) * w * 0.6, (0.06 + 0.2 * scale) * h
        lo, hi = road_x(yb)
        cx = _uniform(rng, max(lo + cw / 4, cw / 2), min(hi - cw / 4, w - cw / 2))
        draw.rectangle([cx - cw / 2, yb - chh * 0.6, cx + cw / 2, yb], fill=CAR)
        draw.rectangle([cx - cw * 0.32, yb - chh, cx + cw * 0.32, yb - chh * 0.55], fill=CAR)
    # persons on the sidewalks: torso/legs + head
    for _ in range(int(rng.integers(1, 4))):
        yb = rng.uniform(horizon + 0.1 * (h - horizon), h - 0.05 * (h - horizon))
        scale = (yb - horizon) / (h - horizon)
        ph = (0.12 + 0.35 * scale) * h
        pw = ph * 0.28
        lo, hi = road_x(yb)
        left_ok, right_ok = lo - pw / 2 > pw, w - pw > hi + pw / 2
        if left_ok and (not right_ok or rng.random() < 0.5):
            px = rng.uniform(pw, lo - pw / 2)
        elif right_ok:
            px = rng.uniform(hi + pw / 2, w - pw)
        else:
            px = _uniform(rng, pw, w - pw)
        draw.rectangle([px - pw / 2, yb - ph * 0.82, px + pw / 2, yb], fill=PERSON)
        r = ph * 0.1
        draw.ellipse([px - r, yb - ph, px + r, yb - ph * 0.8], fill=PERSON)
    # ego vehicle at the bottom: ignore (255), like the real gtFine
    if rng.random() < 0.7:
        eh = rng.uniform(0.03, 0.08) * h
        draw.ellipse([-0.1 * w, h - eh, 1.1 * w, h + eh], fill=IGNORE_INDEX)

    lab = np.asarray(label, dtype=np.uint8)
    palette = np.zeros((256, 3), np.float32)
    palette[:len(CITYSCAPES_PALETTE)] = CITYSCAPES_PALETTE
    palette[IGNORE_INDEX] = (30, 30, 35)
    img = palette[lab]
    # per-region colour jitter, shading and noise so every class is learnable but not flat
    for cls in np.unique(lab):
        m = lab == cls
        img[m] += rng.uniform(-10, 10, 3).astype(np.float32)
    img += 12 * _smooth_noise(rng, w, h, cells=rng.uniform(10, 30))
    img += 4 * _smooth_noise(rng, w, h, cells=rng.uniform(20, 60), channels=3)
    img += np.clip(rng.normal(0, 5, (h, w, 3)), -10, 10)
    img *= rng.uniform(0.85, 1.1)  # global brightness
    return lab, _to_uint8(img)


def make_cityscapes(root, num_train=8, num_val=4, img_size=(512, 256), seed=0):
    """Write a small Cityscapes-format segmentation dataset under ``root``.

    Layout (``<stem>`` = ``<city>_<6 digits>_<6 digits>``)::

        root/leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png   RGB
        root/gtFine/{train,val}/<city>/<stem>_gtFine_labelTrainIds.png   uint8 trainIds

    Train images are spread over ``aachen`` and ``bremen``, val images are in ``frankfurt``.
    Label maps hold Cityscapes trainIds: sky 10 (top), building 2 and vegetation 8 (above the
    horizon), road 0 (perspective trapezoid) and sidewalk 1 (beside it), car 13, person 11,
    and 255 (ignore, the ego vehicle at the bottom in most images). Image pixels are the
    Cityscapes palette colour of their class with jitter, shading and noise.
    ``img_size`` = (width, height).

    Returns a dict with ``root``, ``classes`` / ``palette`` (the 19 Cityscapes classes),
    ``train_img_dir``, ``train_ann_dir``, ``val_img_dir``, ``val_ann_dir`` (relative to
    root), ``num_train``, ``num_val``, ``cities``, ``img_size`` and ``skipped``.
    """
    num_train = _check_count(num_train, 'num_train')
    num_val = _check_count(num_val, 'num_val')
    w, h = _check_size(img_size)
    params = dict(num_train=num_train, num_val=num_val, img_size=[w, h], seed=int(seed))
    outputs = ['leftImg8bit', 'gtFine']
    root, done = _prepare_root(root, 'cityscapes', params, outputs)
    if done is not None:
        return done

    cities = dict(train=TRAIN_CITIES, val=VAL_CITIES)
    for split, num in (('train', num_train), ('val', num_val)):
        for city in cities[split]:
            os.makedirs(osp.join(root, 'leftImg8bit', split, city), exist_ok=True)
            os.makedirs(osp.join(root, 'gtFine', split, city), exist_ok=True)
        for i in range(num):
            city = cities[split][i % len(cities[split])]
            stem = f'{city}_{i // len(cities[split]):06d}_{19 + i % 7:06d}'
            lab, img = _city_scene(_rng(seed, 'cityscapes', split, i), w, h)
            Image.fromarray(img).save(
                osp.join(root, 'leftImg8bit', split, city, f'{stem}_leftImg8bit.png'),
                compress_level=1)
            Image.fromarray(lab, mode='L').save(
                osp.join(root, 'gtFine', split, city, f'{stem}_gtFine_labelTrainIds.png'),
                compress_level=1)

    result = dict(
        kind='cityscapes', classes=list(CITYSCAPES_CLASSES),
        palette=[list(c) for c in CITYSCAPES_PALETTE], img_size=[w, h],
        train_img_dir='leftImg8bit/train', train_ann_dir='gtFine/train',
        val_img_dir='leftImg8bit/val', val_ann_dir='gtFine/val', num_train=num_train,
        num_val=num_val, cities=dict(train=list(TRAIN_CITIES), val=list(VAL_CITIES)),
        drawn_train_ids=[ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, CAR])
    result = _finish(root, 'cityscapes', params, outputs, result)
    result['classes'] = tuple(result['classes'])
    return result


# ---------------------------------------------------------------------------------------------
# ImageNet
# ---------------------------------------------------------------------------------------------
def _saturated_colour(rng):
    """A random saturated, fairly bright RGB colour (contrasts with the grey background)."""
    hue = rng.uniform(0, 6)
    sat, val = rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0)
    c = val * sat
    x = c * (1 - abs(hue % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hue) % 6]
    return np.array([(v + val - c) * 255 for v in rgb], np.float32)


def _imagenet_image(rng, size, shape):
    img = _background(rng, size, size)
    extent = rng.uniform(0.4, 0.8) * size
    poly = _shape_polygon(shape, extent, rng)
    lo, hi = poly.min(0), poly.max(0)
    cx = _uniform(rng, 1 - lo[0], size - 2 - hi[0])
    cy = _uniform(rng, 1 - lo[1], size - 2 - hi[1])
    _paint(img, _polygon_mask(poly + (cx, cy), size, size), _saturated_colour(rng), rng)
    return _to_uint8(img)


def make_imagenet(root, classes=IMAGENET_CLASSES, num_train_per_class=12, num_val_per_class=4,
                  img_size=64, seed=0):
    """Write a small ImageNet-format classification dataset (mmpretrain layout) under ``root``.

    Layout::

        root/train/<class>/<class>_0000.JPEG ...
        root/val/<class>/<class>_0000.JPEG ...
        root/meta/train.txt    "<class>/<class>_0000.JPEG <label>" (relative to root/train)
        root/meta/val.txt      (relative to root/val)
        root/meta/classes.txt  one class name per line, line i = label i

    Labels follow the order of ``classes`` (not the alphabetical folder order), so read the
    data through the annotation files, e.g. ``ImageNet(data_root=root, split='train',
    metainfo=dict(classes=classes))`` (which picks ``meta/train.txt``), or
    ``CustomDataset(data_root=root, data_prefix='train', ann_file='meta/train.txt',
    metainfo=dict(classes=classes))``. Each class is one shape (see :data:`SHAPES`; a class
    named like a shape gets that shape) with a random colour, position, size and rotation.
    ``img_size`` is an int (square images) or (width, height) with equal sides.

    Returns a dict with ``root``, ``classes``, ``shapes``, ``num_classes``,
    ``train_ann_file`` / ``val_ann_file`` / ``classes_file`` / ``train_data_prefix`` /
    ``val_data_prefix`` (relative to root), ``num_train`` / ``num_val`` (images in total),
    ``img_size`` and ``skipped``.
    """
    num_train_per_class = _check_count(num_train_per_class, 'num_train_per_class')
    num_val_per_class = _check_count(num_val_per_class, 'num_val_per_class')
    w, h = _check_size(img_size)
    if w != h:
        raise ValueError(f'make_imagenet: img_size must be square, got {img_size}')
    classes, shapes = _assign_shapes(classes, 'make_imagenet')
    for c in classes:
        if not c or c in ('.', '..') or '/' in c or '\\' in c or any(ch.isspace() for ch in c):
            raise ValueError(f'make_imagenet: class name {c!r} cannot be used as a folder name')
    params = dict(classes=list(classes), num_train_per_class=num_train_per_class,
                  num_val_per_class=num_val_per_class, img_size=w, seed=int(seed))
    outputs = ['train', 'val', 'meta']
    root, done = _prepare_root(root, 'imagenet', params, outputs)
    if done is not None:
        return done

    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, per_class in (('train', num_train_per_class), ('val', num_val_per_class)):
        lines = []
        for label, (cls, shape) in enumerate(zip(classes, shapes)):
            os.makedirs(osp.join(root, split, cls), exist_ok=True)
            for n in range(per_class):
                rel = f'{cls}/{cls}_{n:04d}.JPEG'
                img = _imagenet_image(_rng(seed, 'imagenet', split, label * 100003 + n), w, shape)
                Image.fromarray(img).save(osp.join(root, split, rel), format='JPEG', **_JPEG_KW)
                lines.append(f'{rel} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    with open(osp.join(root, 'meta', 'classes.txt'), 'w') as f:
        f.writelines(f'{c}\n' for c in classes)

    result = dict(
        kind='imagenet', classes=list(classes), shapes=list(shapes), num_classes=len(classes),
        img_size=w, train_ann_file='meta/train.txt', val_ann_file='meta/val.txt',
        classes_file='meta/classes.txt', train_data_prefix='train', val_data_prefix='val',
        num_train=num_train_per_class * len(classes), num_val=num_val_per_class * len(classes))
    result = _finish(root, 'imagenet', params, outputs, result)
    result['classes'] = tuple(result['classes'])
    return result
