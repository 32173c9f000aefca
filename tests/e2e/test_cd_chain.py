"""Table 5's stage C+D, end to end on tiny data: DyRep on ImageNet (mmpretrain) -> the evolved
checkpoint initialises the FPN backbone (structure included) -> DyRep evolves it further on COCO
(mmdet) -> deploy -> the stock Faster R-CNN with a plain ResNet-50 loads it strictly."""
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from .helpers import ONE_EPOCH, TINY_CLS_R50, TINY_DET_CD, TOOLS, history, output, run_tool, updates


def test_c_plus_d_chain(tmp_path, imagenet_env, coco_env):
    # stage C: DyRep ResNet-50 on (synthetic) ImageNet, one epoch, one update
    cls_dir = tmp_path / 'stage_c'
    run_tool([TOOLS / 'train.py', TINY_CLS_R50, '--work-dir', cls_dir, '--cfg-options', 'param_scheduler.T_max=1',
              'param_scheduler.end=1'] + ONE_EPOCH, env=imagenet_env)
    assert len(updates(cls_dir)) == 1
    imagenet_blocks = history(cls_dir)['records'][-1]['structure']['blocks']
    assert imagenet_blocks

    # stage D: the FPN's backbone starts from that checkpoint (evolved structure included)
    det_dir = tmp_path / 'stage_d'
    proc = run_tool([TOOLS / 'train.py', TINY_DET_CD, '--work-dir', det_dir, '--cfg-options',
                     f'model.backbone.init_cfg.checkpoint={cls_dir / "epoch_1.pth"}'] + ONE_EPOCH, env=coco_env)
    records = history(det_dir)['records']
    start = records[0]['structure']['blocks']
    assert set(start) == set(imagenet_blocks), 'the detector did not start from the ImageNet structure'
    assert len(updates(det_dir)) == 1
    assert records[-1]['grown'] and records[-1]['structure']['blocks'] != start  # evolved further
    assert 'Epoch(val)' in output(proc)  # COCO eval ran (2 iterations learn too little for a score)

    # deploy the detector; the stock mmdet model (type='ResNet') loads it with strict=True
    out = tmp_path / 'deployed' / 'fpn_cd.pth'
    run_tool([TOOLS / 'deploy.py', TINY_DET_CD, det_dir / 'epoch_1.pth', out], env=coco_env)
    cfg = Config.fromfile(str(out.with_suffix('.py')))
    assert cfg.model.backbone.type == 'ResNet' and 'rep_mode' not in cfg.model.backbone
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    detector = MODELS.build(cfg.model)
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    detector.load_state_dict(state, strict=True)
