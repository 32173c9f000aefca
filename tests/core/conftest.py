import pytest
import torch
import torchvision


def make_resnet18(seed=0):
    """A torchvision ResNet-18 with non-trivial BN statistics and two dilated 3x3 convs."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    for name, dilation in (('layer4.0.conv2', 2), ('layer4.1.conv1', 4)):
        conv = model.get_submodule(name)
        conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64))
    return model.eval()


@pytest.fixture
def resnet18():
    return make_resnet18()


@pytest.fixture
def batches():
    g = torch.Generator().manual_seed(123)
    return [torch.randn(4, 3, 64, 64, generator=g) for _ in range(4)]


@pytest.fixture
def image():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()
