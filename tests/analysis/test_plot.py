"""Structure pictures: what is drawn matches the model (boxes, frames, importance labels), PNGs are
written from a work dir and from checkpoints, and bad inputs give clear errors."""
import os.path as osp
import sys

import matplotlib.image as mpimg
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdyrep.analysis.history import HistoryError, flatten_structure
from mmdyrep.analysis.plot import load_run, plot_block, plot_overview
from mmdyrep.core import DyRepBlock, extract_structure, iter_blocks
from .test_history import make_run, write

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import plot_structure  # noqa: E402

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def run():
    return make_run()


def gids(fig, prefix):
    return [a for ax in fig.axes for a in ax.findobj() if (a.get_gid() or '').startswith(prefix)]


def checkpoint(tmp_path, backbone, records=None, name='epoch_4.pth', **extra):
    ckpt = {'meta': {'epoch': 4, 'iter': 400},
            'state_dict': {f'backbone.{k}': v for k, v in backbone.state_dict().items()}, **extra}
    if records is not None:
        ckpt['dyrep'] = {'version': 1, 'history': records, 'num_updates': len(records) - 1}
    path = tmp_path / name
    torch.save(ckpt, path)
    return str(path)


@pytest.mark.parametrize('name', ['layer4.0.conv1', 'layer3.1.conv2', 'layer4.0.conv1.branches.1x1_kxk.kxk'])
def test_block_drawing_matches_the_model(run, name):
    backbone, history = run
    block = backbone.get_submodule(name)
    modules = list(block.modules())
    blocks = [m for m in modules if isinstance(m, DyRepBlock)]
    importances = {n: b.importances() for n, b in iter_blocks(backbone)}
    fig = plot_block(extract_structure(backbone), name, importances)
    # one box per conv and per BN of the model, one frame and one '+' per (nested) block
    assert len(gids(fig, 'op:conv')) == sum(isinstance(m, nn.Conv2d) for m in modules)
    assert len(gids(fig, 'op:bn')) == sum(isinstance(m, _BatchNorm) for m in modules)
    assert len(gids(fig, 'op:avg')) == sum(list(b.branches).count('1x1_avg') for b in blocks)
    assert len(gids(fig, 'op:identity')) == sum(list(b.branches).count('residual') for b in blocks)
    assert len(gids(fig, 'block')) == len(blocks) >= (1 if '.branches.' in name else 2)  # nested drawn too
    assert len(gids(fig, 'sum')) == len(blocks)
    # one importance label per branch, with the branch's s (Eq. 9) of the model
    labels = sorted(t.get_text() for t in gids(fig, 'importance'))
    expected = sorted(f'{branch}\ns={s:.3g}' for b in blocks for branch, s in b.importances().items())
    assert labels == expected and len(labels) == sum(len(b.branches) for b in blocks)


def test_block_png(run, tmp_path):
    backbone, history = run
    out = tmp_path / 'sub' / 'block.png'
    plot_block(history['records'][-1]['structure'], 'layer4.0.conv1', history['records'][-1]['importances'],
               out=str(out), dpi=50)
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    image = mpimg.imread(str(out))
    assert image.shape[0] > 100 and image.shape[1] > 200 and image[..., :3].std() > 0.05  # not blank


def test_unknown_block_lists_the_blocks(run):
    structure = run[1]['records'][-1]['structure']
    with pytest.raises(HistoryError, match=r"'layer1.0.conv1' is not a DyRep block .*layer3.1.conv2.origin"):
        plot_block(structure, 'layer1.0.conv1')
    with pytest.raises(HistoryError, match='not a DyRep block'):
        plot_block(structure, 'layer3.1.conv2.branches.1x1.kxk')


def test_overview_shows_every_grow_cut_and_branch(run, tmp_path):
    backbone, history = run
    run_data = load_run(write(tmp_path, history))
    fig = plot_overview(run_data)
    grows = sum(len(r['grown']) for r in history['records'])
    cuts = sum(len(r['cut']) for r in history['records'])
    assert (grows, cuts) == (4, 1)
    assert sum(len(c.get_offsets()) for c in gids(fig, 'grow')) == grows
    assert sum(len(c.get_offsets()) for c in gids(fig, 'cut')) == cuts
    assert len(gids(fig, 'importance')) == sum(len(b.branches) for _, b in iter_blocks(backbone))
    out = tmp_path / 'overview.png'
    plot_overview(run_data, out=str(out), dpi=40)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_checkpoint_importances_and_history(run, tmp_path):
    backbone, history = run
    data = load_run(checkpoint(tmp_path, backbone, history['records']))
    assert data.structure == extract_structure(backbone)
    expected = {n: b.importances() for n, b in iter_blocks(backbone)}
    assert data.importances.keys() == expected.keys()
    for path in expected:
        assert data.importances[path] == pytest.approx(expected[path], rel=1e-6)
    assert data.history['records'] == history['records'] and data.history['max_iters'] == 400
    # a checkpoint without the hook's history: structure and importances only
    bare = load_run(checkpoint(tmp_path, backbone, name='bare.pth'))
    assert bare.history is None and bare.structure == data.structure
    fig = plot_overview(bare)
    assert not gids(fig, 'grow') and len(gids(fig, 'importance')) == sum(map(len, flatten_structure(
        data.structure).values()))


def test_cli_checkpoint_and_work_dir(run, tmp_path, capsys):
    backbone, history = run
    ckpt = checkpoint(tmp_path, backbone, history['records'])
    out = tmp_path / 'pngs'
    assert plot_structure.main([ckpt, '--out', str(out), '--dpi', '40']) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ['block_layer3.1.conv2.png', 'block_layer4.0.conv1.png', 'overview.png']
    assert all((out / n).read_bytes()[:8] == PNG_MAGIC for n in written)
    text = capsys.readouterr().out
    assert 'epoch 2 (iter 200): cut layer4.0.conv1 -x 1xk' not in text  # a checkpoint does not say epochs
    assert 'iter 200: cut layer4.0.conv1 -x 1xk' in text and 'training average' in text
    (tmp_path / 'wd').mkdir()
    work_dir = write(tmp_path / 'wd', history)
    out2 = tmp_path / 'pngs2'
    nested = 'layer4.0.conv1.branches.1x1_kxk.kxk'
    assert plot_structure.main([work_dir, '--out', str(out2), '--conv', nested, '--dpi', '40']) == 0
    assert sorted(p.name for p in out2.iterdir()) == [f'block_{nested}.png', 'overview.png']
    assert 'epoch 2 (iter 200): cut layer4.0.conv1 -x 1xk' in capsys.readouterr().out
    assert plot_structure.main([work_dir, '--out', str(out2), '--conv', 'layer1.0.conv1']) == 1
    assert "'layer1.0.conv1' is not a DyRep block" in capsys.readouterr().err


class NotATensor:
    pass


def test_checkpoint_errors(run, tmp_path):
    backbone, _ = run
    with pytest.raises(HistoryError, match=r'weights_only=True\) refused the checkpoint .* does not unpickle'):
        load_run(checkpoint(tmp_path, backbone, name='unsafe.pth', extra=NotATensor()))
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(b'PK\x03\x04 this is not a checkpoint')
    with pytest.raises(HistoryError, match=r'corrupt.pth: not a readable PyTorch checkpoint'):
        load_run(str(bad))
    from mmdyrep.models.mmpretrain_resnet import DyRepResNet
    plain = checkpoint(tmp_path, DyRepResNet(depth=18), name='plain.pth')
    with pytest.raises(HistoryError, match='never evolved, or the checkpoint is deployed'):
        load_run(plain)
    with pytest.raises(HistoryError, match='no such checkpoint file or work dir'):
        load_run(str(tmp_path / 'nothing.pth'))


def test_runner_checkpoint_with_message_hub_loads(run, tmp_path):
    """An mmengine runner checkpoint holds HistoryBuffers: allow-listed, still weights_only=True."""
    from mmengine.logging import HistoryBuffer
    backbone, history = run
    buffer = HistoryBuffer()
    buffer.update(1.5)
    path = checkpoint(tmp_path, backbone, history['records'], name='runner.pth',
                      message_hub={'log_scalars': {'train/loss': buffer}})
    assert load_run(path).structure == extract_structure(backbone)
