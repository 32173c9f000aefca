"""The DyRep core on a torchvision ResNet-18, no OpenMMLab involved.

Scores every K×K conv (with its BN) over a few training steps, grows the most salient
ones (training-aware Rep with BN calibration), cuts weak branches, deploys back to a
plain ResNet-18 and checks that the eval output never changed.

    .venv/bin/python tools/demo_core.py [--steps 4] [--updates 3]
"""
import argparse
import json

import torch
import torchvision

from mmdyrep.core import (Evolver, deploy, extract_structure, fold_conv_bias, following_norms, iter_blocks,
                          relative_error)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=4, help='training steps between updates')
    parser.add_argument('--updates', type=int, default=3, help='structure updates')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = [(torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8, ))) for _ in range(args.steps)]
    probe = torch.randn(2, 3, 64, 64)
    evolver = Evolver(model, topk=1)  # the default saliency (taylor over conv + BN)
    params_before = sum(p.numel() for p in model.parameters())

    for update in range(args.updates):
        model.train()
        for images, labels in data:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            evolver.record()  # Algorithm 1 line 4
            optimizer.step()
        model.eval()
        before = model(probe)
        report = evolver.step(calibrate=lambda m: [m(x) for x, _ in data])  # lines 7-10
        err = relative_error(model(probe), before)
        # new parameters join the optimizer (the mmengine hook does this with param groups)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        print(f'update {update + 1}: loss {loss.item():.3f}, grew {report["grown"]}, cut {report["cut"]}, '
              f'eval output change {err:.2e}')

    print('evolved structure:', json.dumps(extract_structure(model)['blocks'], indent=1)[:800])
    params_evolved = sum(p.numel() for p in model.parameters())
    model.eval()
    before = model(probe)
    deploy(model)
    err = relative_error(model(probe), before)
    plain = torchvision.models.resnet18(num_classes=10)
    norms = following_norms(model)  # deployed convs carry a bias: fold it into the BN that follows
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            fold_conv_bias(model, name, norms[name])
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.eval()
    final_err = relative_error(plain(probe), before)
    print(f'params: {params_before / 1e6:.2f}M -> evolved {params_evolved / 1e6:.2f}M -> deployed '
          f'{sum(p.numel() for p in plain.parameters()) / 1e6:.2f}M')
    print(f'deploy: max relative error {err:.2e}; stock torchvision ResNet-18 loaded strict=True, '
          f'error {final_err:.2e}; blocks left: {len(list(iter_blocks(model)))}')
    if final_err > 1e-5:
        raise SystemExit('deploy error above 1e-5')


if __name__ == '__main__':
    main()
