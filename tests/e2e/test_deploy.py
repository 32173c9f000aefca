"""tools/deploy.py: an evolved checkpoint -> a plain one the stock toolbox model loads strictly;
and every refusal leaves OUT unwritten and the input untouched."""
import hashlib

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from .helpers import TINY_CLS, TOOLS, output, run_tool


def stock_model(config):
    cfg = Config.fromfile(str(config))
    assert 'DyRep' not in str(cfg.model) and 'mmdyrep' not in str(cfg.get('custom_imports'))
    assert not [h for h in cfg.get('custom_hooks', []) if 'DyRep' in h.type]
    init_default_scope(cfg.default_scope)
    from mmpretrain.registry import MODELS
    return MODELS.build(cfg.model)


def digest(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


@pytest.fixture(scope='module')
def deployed(cls_run, tmp_path_factory):
    out = tmp_path_factory.mktemp('deployed') / 'r18.pth'
    proc = run_tool([TOOLS / 'deploy.py', TINY_CLS, cls_run['checkpoint'], out], env=cls_run['env'])
    return dict(out=out, config=out.with_suffix('.py'), proc=proc)


def test_deploy_evolved_classifier(deployed, cls_run):
    text = output(deployed['proc'])
    assert 'relative' in text and 'verified' in text
    ckpt = torch.load(deployed['out'], map_location='cpu', weights_only=True)
    assert not [k for k in ckpt['state_dict'] if 'dyrep' in k]
    assert ckpt['meta']['dyrep_deploy']['fused_convs']
    model = stock_model(deployed['config'])
    assert type(model.backbone).__name__ == 'ResNet'
    model.load_state_dict(ckpt['state_dict'], strict=True)
    # the stock classifier on the deployed weights scores what the evolved one scored
    where = deployed['out'].parent
    evolved = run_tool([TOOLS / 'test.py', TINY_CLS, cls_run['checkpoint'], '--work-dir', where / 'a'],
                       env=cls_run['env'])
    plain = run_tool([TOOLS / 'test.py', deployed['config'], deployed['out'], '--work-dir', where / 'b'],
                     env=cls_run['env'])

    def accuracy(proc):
        line = [ln for ln in output(proc).splitlines() if 'accuracy/top1' in ln][-1]
        return float(line.split('accuracy/top1:')[1].split()[0])

    assert accuracy(evolved) == accuracy(plain)


def test_deploy_backbone_state_dict(cls_run, tmp_path):
    import mmdyrep.engine  # noqa: F401  (allow-lists the classes of a runner checkpoint for torch.load)
    state = torch.load(cls_run['checkpoint'], map_location='cpu', weights_only=True)['state_dict']
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    assert 'dyrep_structure' in backbone
    src = tmp_path / 'backbone.pth'
    torch.save(backbone, src)
    out = tmp_path / 'out' / 'backbone_deployed.pth'
    run_tool([TOOLS / 'deploy.py', TINY_CLS, src, out], env=cls_run['env'])
    from mmpretrain.models.backbones import ResNet
    ResNet(depth=18).load_state_dict(torch.load(out, weights_only=True), strict=True)


def refuse(args, env, out, message):
    proc = run_tool([TOOLS / 'deploy.py'] + args, env=env, check=False)
    assert proc.returncode != 0, output(proc)
    assert message in proc.stderr, proc.stderr[-3000:]
    assert not out.exists() and not out.with_suffix('.py').exists()
    return proc


def test_refuses_a_corrupt_checkpoint(cls_run, tmp_path):
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(open(cls_run['checkpoint'], 'rb').read()[:20000])
    garbage = tmp_path / 'garbage.pth'
    garbage.write_text('not a checkpoint')
    out = tmp_path / 'out.pth'
    for bad in (truncated, garbage):
        refuse([TINY_CLS, bad, out], cls_run['env'], out, 'cannot read checkpoint')


def test_refuses_a_non_dyrep_checkpoint(deployed, cls_run, tmp_path):
    out = tmp_path / 'again.pth'
    refuse([deployed['config'], deployed['out'], out], cls_run['env'], out, 'not a DyRep checkpoint')


def test_never_overwrites_the_input(cls_run, copy_of):
    src = copy_of(cls_run['checkpoint'])
    before = digest(src)
    proc = run_tool([TOOLS / 'deploy.py', TINY_CLS, src, src], env=cls_run['env'], check=False)
    assert proc.returncode != 0 and 'refusing to overwrite' in proc.stderr
    assert digest(src) == before


def test_refuses_keys_that_do_not_fit(cls_run, tmp_path):
    out = tmp_path / 'r34.pth'
    proc = refuse([TINY_CLS, cls_run['checkpoint'], out, '--cfg-options', 'model.backbone.depth=34'], cls_run['env'],
                  out, 'does not fit')
    assert 'missing' in proc.stderr and 'backbone.layer1.2.conv1.weight' in proc.stderr
