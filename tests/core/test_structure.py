"""The evolved structure as data: extract, JSON, apply to a fresh model, load strictly."""
import json

import pytest
import torch
import torchvision

from mmdyrep.core import DyRepError, apply_structure, extract_structure, grow, iter_blocks
from .conftest import make_resnet18


def evolve(model, batches):
    calibrate = lambda m: [m(b) for b in batches]  # noqa: E731
    grow(model, ['conv1', 'layer2.0.conv1', 'layer4.0.conv2'], calibrate=calibrate)
    grow(model, ['conv1.branches.1x1_kxk.kxk', 'layer2.0.conv1.origin'], calibrate=calibrate)
    model.layer2[0].conv1.origin.cut_(['1xk', '1x1'])
    return model


def test_round_trip_through_json(resnet18, batches, image):
    evolve(resnet18, batches)
    structure = extract_structure(resnet18)
    assert set(structure['blocks']) == {'conv1', 'layer2.0.conv1', 'layer4.0.conv2'}  # outermost only
    assert structure['blocks']['conv1']['branches']['1x1_kxk']['kxk']['spec'] == [3, 64, 7, 2, 0, 1, 1]  # mid = in
    assert set(structure['blocks']['layer2.0.conv1']['origin']['branches']) == {'1x1_kxk', '1x1_avg', 'kx1'}
    fresh = make_resnet18(seed=5)
    apply_structure(fresh, json.loads(json.dumps(structure)))
    assert extract_structure(fresh) == structure
    result = fresh.load_state_dict(resnet18.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(fresh.eval()(image), resnet18(image))


def test_structure_that_does_not_fit(resnet18, batches):
    evolve(resnet18, batches)
    structure = extract_structure(resnet18)

    def check(model, structure, match):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(DyRepError, match=match):
            apply_structure(model, structure)
        assert not list(iter_blocks(model))
        assert model.state_dict().keys() == before.keys()

    # another depth: layer4.0.conv2 of resnet18 has 512 channels; resnet34 has layer2.3, resnet18 not
    r34 = torchvision.models.resnet34()
    grow(r34, ['layer2.3.conv1'])
    check(make_resnet18(), extract_structure(r34), "no module named 'layer2.3.conv1'")
    # a spec mismatch (a stem conv with stride 1)
    other = make_resnet18()
    other.conv1 = torch.nn.Conv2d(3, 64, 7, 1, 3, bias=False)
    check(other, structure, r'conv1: the structure was made for a conv with spec \[3, 64, 7, 2, 3, 1, 1\] .* '
          r'the model has \[3, 64, 7, 1, 3, 1, 1\]')
    # a nested spec that lies
    bad = json.loads(json.dumps(structure))
    bad['blocks']['conv1']['branches']['1x1_kxk']['kxk']['spec'][3] = 1
    check(make_resnet18(), bad, r'conv1.branches.1x1_kxk.kxk: the structure was made for')
    # a branch type that does not fit (residual on a stride-2 conv)
    bad = json.loads(json.dumps(structure))
    bad['blocks']['layer2.0.conv1']['branches']['residual'] = {}
    check(make_resnet18(), bad, r'layer2.0.conv1: residual needs')
    # garbage
    check(make_resnet18(), {'blocks': {}}, 'not an mmdyrep structure')
    check(make_resnet18(), dict(structure, version=99), 'unsupported structure version 99')
    # onto an evolved model
    with pytest.raises(DyRepError, match='already a DyRep block'):
        apply_structure(resnet18, structure)
