"""inspector cam on a torch CNN exported by our converter, against pytorch-grad-cam on the same torch model,
image and target: Pearson correlation of the maps at least 0.99 (EigenCAM up to the SVD's sign, which
pytorch-grad-cam leaves to LAPACK)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gradcam = pytest.importorskip("pytorch_grad_cam")

import converters  # noqa: E402
import inspector  # noqa: E402

pytestmark = pytest.mark.torch
SIZE = 64


def make_net():
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 24, 3, padding=1, stride=2), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 32, 3, padding=1, stride=2), nn.ReLU(),  # 5, 6: the target layer, 16x16 maps
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5),
    )
    with torch.no_grad():
        bn = net[3]
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def photo_pixels():
    """A smooth picture with two bright blobs on a gradient: structure for the maps to find."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    blob = lambda cy, cx, r: np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r)  # noqa: E731
    red = 200 * blob(0.3, 0.3, 0.02) + 40 * xx
    green = 180 * blob(0.7, 0.65, 0.03) + 40 * yy
    blue = 120 * blob(0.5, 0.8, 0.01) + 30
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("camtorch") / "net.onnx")
    converters.convert_torch(make_net, (1, 3, SIZE, SIZE), out)
    return out


def pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def torch_input(model, pixels):
    return torch.from_numpy(model.image_batch([pixels]).astype(np.float32))


@pytest.mark.parametrize("target", [None, 3])
def test_scorecam_agrees_with_pytorch_grad_cam(exported, target):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = inspector.load(exported)
    pixels = photo_pixels()
    ours = model.cam(pixels, "scorecam", layer=-1, target=target, batch=8)
    assert ours.layer == "5" and ours.layer_shape == (32, 16, 16)
    net = make_net()
    x = torch_input(model, pixels)
    with torch.no_grad():
        top = int(net(x).argmax())
    cls = top if target is None else target
    assert ours.target == cls
    with ScoreCAM(model=net, target_layers=[net[6]]) as reference:
        reference.batch_size = 8
        theirs = reference(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0]
    assert theirs.shape == ours.cam.shape
    assert pearson(ours.cam, theirs) >= 0.99


def test_eigencam_agrees_with_pytorch_grad_cam_up_to_sign(exported):
    from pytorch_grad_cam import EigenCAM

    model = inspector.load(exported)
    pixels = photo_pixels()
    ours = model.cam(pixels, "eigencam", layer=-1)
    net = make_net()
    x = torch_input(model, pixels)
    # pytorch-grad-cam's sign is LAPACK's choice: run it on the maps and on the maps negated, which
    # flips the projection unless LAPACK flips the singular vector too; one of them is our orientation.
    maps = []
    for flip in (1.0, -1.0):
        with EigenCAM(model=net, target_layers=[net[6]], reshape_transform=lambda a, f=flip: a * f) as reference:
            maps.append(reference(input_tensor=x, targets=None)[0])
    assert max(pearson(ours.cam, theirs) for theirs in maps) >= 0.99


def test_ablationcam_agrees_with_pytorch_grad_cam(exported):
    """ReLU maps: pytorch-grad-cam ablates to 0 as well, so the two agree where the definitions meet."""
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = inspector.load(exported)
    pixels = photo_pixels()
    ours = model.cam(pixels, "ablationcam", layer=-1, target=1)
    net = make_net()
    x = torch_input(model, pixels)
    with AblationCAM(model=net, target_layers=[net[6]], batch_size=8) as reference:
        theirs = reference(input_tensor=x, targets=[ClassifierOutputTarget(1)])[0]
    assert pearson(ours.cam, theirs) >= 0.99
