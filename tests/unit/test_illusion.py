"""CLIP-Illusion and its activation-maximisation baseline (neurons/illusion.py), and the neuron grid figure, on
a tiny random CNN classifier and the untrained tiny ConceptWorld CLIP."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conceptlens.models import Classifier, ModelSpec, build_vlm
from conceptlens.neurons.illusion import (FourierImage, Visualiser, activation, activation_maps, augment,
                                          visualise)
from conceptlens.report.figures import plot_neuron_grid

WIDTH, CLASSES, TARGET, NEURONS, SIDE = 6, 3, 1, [0, 2, 4], 16
SETTINGS = dict(samples=2, steps=16, augmentations=1, image_size=SIDE)


def tiny_cnn(seed: int = 0) -> Classifier:
    """conv-relu-conv-relu-pool: pooled features of WIDTH channels. The head makes class TARGET rely on NEURONS
    (as CLIP-Illusion's neurons are those a class relies on)."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, WIDTH, 3, stride=2, padding=1),
                            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Linear(WIDTH, CLASSES)
    with torch.no_grad():
        for conv in (encoder[0], encoder[2]):
            conv.weight.mul_(4)  # default init is too gentle for 16 steps to move this shallow net far
        head.weight[TARGET, NEURONS] = head.weight[TARGET, NEURONS].abs() + 0.5
    return Classifier(encoder, head).eval()


@pytest.fixture(scope="module")
def tiny_vlm():
    torch.manual_seed(0)
    return build_vlm("conceptworld-tiny")


@pytest.fixture(scope="module")
def run(tiny_vlm):
    clf = tiny_cnn()
    clf.train()
    out = visualise(clf, tiny_vlm, class_index=TARGET, class_text="a photo of a star", neurons=NEURONS, seed=0,
                    **SETTINGS)
    return clf, out


def test_fourier_image_is_seeded_rgb_in_unit_range():
    image = FourierImage(4, 20, generator=torch.Generator().manual_seed(0))
    x = image()
    x.sum().backward()
    x = x.detach()
    assert x.shape == (4, 3, 20, 20) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert abs(float(x.mean()) - 0.5) < 0.05  # the small random spectrum starts near grey
    again = FourierImage(4, 20, generator=torch.Generator().manual_seed(0))()
    assert torch.equal(x, again)
    assert image.spectrum.grad is not None and image.spectrum.grad.abs().sum() > 0


def test_augment_keeps_shape_is_differentiable_and_seeded():
    x = torch.rand(3, 3, 24, 24, requires_grad=True)
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x, atol=0.05)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(augment(x, torch.Generator().manual_seed(1)), out)
    assert not torch.equal(augment(x, torch.Generator().manual_seed(2)), out)


def test_activation_maps_find_the_pre_pooling_map():
    # channel 0 is the red intensity, so on an image red on the left only it fires on the left only
    encoder = nn.Sequential(nn.Conv2d(3, 2, 2, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        encoder[0].weight.zero_()
        encoder[0].bias.zero_()
        encoder[0].weight[0, 0] = 1.0
        encoder[0].weight[1, 1] = 1.0
    clf = Classifier(encoder, nn.Linear(2, 2), "none").eval()
    x = torch.zeros(2, 3, 16, 16)
    x[:, 0, :, :8] = 1.0
    x[:, 1] = torch.rand(2, 16, 16)
    masks = activation_maps(clf, x, [0, 0])
    assert masks.shape == (2, 16, 16) and masks.dtype == torch.float32
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1 and float(masks.max()) == 1
    assert (masks[:, :, :6].mean((1, 2)) > masks[:, :, 10:].mean((1, 2)) + 0.5).all()
    assert torch.allclose(activation(clf, x, [0, 1]), clf.features(x)[:, [0, 1]].diagonal())
    assert all(not m._forward_hooks for m in encoder.modules())  # the hooks are gone


def test_activation_maps_read_the_last_map_before_pooling():
    clf, x = tiny_cnn(), torch.rand(3, 3, SIDE, SIDE)
    with torch.no_grad():
        last = clf.encoder[:4](clf.preprocess(x))  # after the second ReLU, before pooling: (3, WIDTH, 8, 8)
    expected = torch.nn.functional.interpolate(last[[0, 1, 2], [1, 3, 5]][:, None], size=(SIDE, SIDE),
                                               mode="bilinear", align_corners=False)[:, 0]
    low, high = expected.amin((1, 2), keepdim=True), expected.amax((1, 2), keepdim=True)
    assert torch.allclose(activation_maps(clf, x, [1, 3, 5]), (expected - low) / (high - low), atol=1e-5)


def test_activation_maps_fall_back_to_saliency_without_a_spatial_map():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))  # no 4-D map: a stand-in for a ViT
    with torch.no_grad():
        encoder[1].weight.zero_()
        encoder[1].weight.view(4, 3, 8, 8)[2, :, :, 6:] = 1.0  # neuron 2 reads the right edge only
    clf = Classifier(encoder, nn.Linear(4, 2)).eval()
    masks = activation_maps(clf, torch.rand(1, 3, 8, 8), [2])
    assert masks.shape == (1, 8, 8)
    assert float(masks[0, :, 6:].min()) == 1.0 and float(masks[0, :, :6].max()) == 0.0


def test_visualise_raises_each_neuron_and_restores_the_models(run):
    clf, out = run
    k, s = len(NEURONS), SETTINGS["samples"]
    assert out["illusion"].shape == out["baseline"].shape == (k, s, SIDE, SIDE, 3)
    assert out["illusion"].dtype == np.uint8
    assert out["illusion_mask"].shape == (k, s, SIDE, SIDE) and out["illusion_mask"].dtype == np.float32
    assert 0 <= out["illusion_mask"].min() and out["illusion_mask"].max() <= 1
    for name in ("start_activation", "illusion_activation", "baseline_activation", "illusion_clip"):
        assert out[name].shape == (k, s) and out[name].dtype == np.float32, name
    assert out["illusion_prediction"].dtype == np.int64
    assert (out["illusion_activation"] > out["start_activation"]).all()
    assert (out["baseline_activation"] > out["start_activation"]).all()
    assert (out["illusion_prediction"] == TARGET).all()  # the cross-entropy term keeps the class
    assert clf.training and all(p.requires_grad for p in clf.parameters())


def test_baseline_images_excite_their_own_neuron_most(run):
    clf, out = run
    images = torch.from_numpy(out["baseline"]).flatten(0, 1).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        features = clf.features(images)[:, NEURONS].view(len(NEURONS), -1, len(NEURONS)).mean(1)
    # row a: the images optimised for neuron a; column b: neuron b. Each neuron fires most on its own images.
    assert (features.argmax(0) == torch.arange(len(NEURONS))).all(), features


def test_a_neuron_off_on_grey_images_still_rises(tiny_vlm):
    """Starting images are near grey: a neuron off on all of them gets no gradient through its ReLU, unless
    the gradient is redirected around dead ReLUs."""
    clf = tiny_cnn()
    noisy_grey = augment(torch.full((64, 3, SIDE, SIDE), 0.5), torch.Generator().manual_seed(0))
    with torch.no_grad():
        before_relu = clf.encoder[:3](clf.preprocess(noisy_grey))[:, 5]
        clf.encoder[2].bias[5] -= before_relu.max() + 0.6
        assert float(clf.features(noisy_grey)[:, 5].max()) == 0
    out = visualise(clf, tiny_vlm, class_index=TARGET, class_text="a star", neurons=[5], seed=0, **SETTINGS)
    assert (out["start_activation"] == 0).all() and (out["baseline_activation"] > 0).all()


def test_visualise_is_seeded(run, tiny_vlm):
    clf, out = run
    kwargs = dict(class_index=TARGET, class_text="a photo of a star", neurons=NEURONS, **SETTINGS)
    again = visualise(clf, tiny_vlm, seed=0, **kwargs)
    assert out.keys() == again.keys()
    for name in out:
        assert np.array_equal(out[name], again[name]), name
    other = visualise(clf, tiny_vlm, seed=1, **kwargs)
    assert not np.array_equal(out["illusion"], other["illusion"])
    assert not np.array_equal(out["baseline"], other["baseline"])


def test_visualise_rejects_a_neuron_out_of_range(tiny_vlm):
    with pytest.raises(ValueError, match="neurons in"):
        visualise(tiny_cnn(), tiny_vlm, class_index=0, class_text="x", neurons=[WIDTH], samples=1, steps=1)


def test_visualiser_pads_classes_with_fewer_neurons():
    spec = ModelSpec("resnet18", None, "fc", 3, "conceptworld-tiny", None)  # untrained classifier and tiny CLIP
    visualiser = Visualiser(spec, dict(samples=1, steps=2, augmentations=1, image_size=SIDE), device="cpu")
    batch = {"class_index": np.array([0, 2]), "class_text": np.array(["a photo of a star", "a cross"], dtype=object),
             "neurons": np.array([[5, 300, -1], [7, -1, -1]]), "seed": np.array([0, 1])}
    out = visualiser(batch)
    assert np.array_equal(out["class_index"], batch["class_index"])
    assert out["illusion"].shape == (2, 3, 1, SIDE, SIDE, 3)
    assert out["illusion_activation"].shape == (2, 3, 1)
    assert np.isfinite(out["illusion_activation"][0, :2]).all() and np.isnan(out["illusion_activation"][1, 1:]).all()
    assert (out["illusion_prediction"][1, 1:] == -1).all() and not out["baseline"][0, 2].any()
    with pytest.raises(ValueError, match="unknown"):
        Visualiser(spec, dict(samples=1, steps=2, colour=1))


def test_plot_neuron_grid_writes_a_png(run, tmp_path):
    _, out = run
    labels = [f"n{n} water (r=0.71)" for n in NEURONS]
    path = plot_neuron_grid(tmp_path / "grid.png", illusion=out["illusion"], baseline=out["baseline"],
                            illusion_mask=out["illusion_mask"], labels=labels, title="star")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100
