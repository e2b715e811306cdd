"""The preflight and the preprocessing it checks: a model trained on [0, 1] pixels, fed ImageNet-normalised ones,
is caught and the fix named; a permuted class order is caught; a checkpoint of another class count is one line;
unreadable images and files that are not images are named."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conceptlens.config import load_config, model_key
from conceptlens.models import ModelSpec, build_classifier, save_classifier
from conceptlens.models.classifier import CheckpointMismatch
from conceptlens.models.preprocess import PRESETS, input_transform, mean_std
from conceptlens.pipeline.datasets import read_dataset, skipped_files
from conceptlens.pipeline.preflight import PreflightFailed, preflight, run_preflight

DIM, BRIGHT = 0.86, 0.94  # grey levels of the two classes; the model splits them at 0.9 on [0, 1] pixels


class Brightness(nn.Module):
    """Class 1 when the mean pixel of its input exceeds 0.9: right on [0, 1] pixels only (after ImageNet's mean/std or
    as bytes both greys land above 0.9, in [-1, 1] both below)."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(3, num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0] * 3, [1.0] * 3]))
            self.fc.bias.copy_(torch.tensor([3 * 0.9, -3 * 0.9]))

    def forward(self, x):
        return self.fc(self.pool(x))


def brightness_net(num_classes: int) -> nn.Module:
    return Brightness(num_classes)


@pytest.fixture
def folder(tmp_path):
    """An image folder of 20 dim and 20 bright images, one corrupt PNG and a stray text file."""
    root = tmp_path / "images"
    for label, grey in (("dim", DIM), ("bright", BRIGHT)):
        (root / label).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((8, 8, 3), round(grey * 255), np.uint8)).save(root / label / f"{i:02d}.png")
    (root / "dim" / "broken.png").write_bytes(b"not a png")
    (root / "dim" / "notes.txt").write_text("a stray file")
    return root


def spec(preprocess: str = "imagenet", num_classes: int = 2, checkpoint=None) -> ModelSpec:
    return ModelSpec(f"{__name__}:brightness_net", checkpoint, "fc", num_classes, "conceptworld-tiny", None,
                     classifier_preprocess=preprocess)


def test_presets_numbers_and_functions_map_unit_pixels():
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(input_transform("none")(x), x)
    assert torch.allclose(input_transform("byte")(x), x * 255, atol=1e-4)
    assert torch.allclose(input_transform("half")(x), x * 2 - 1)
    mean, std = PRESETS["imagenet"]
    assert torch.allclose(input_transform(None)(x), (x - torch.tensor(mean).view(1, 3, 1, 1))
                          / torch.tensor(std).view(1, 3, 1, 1))
    assert mean_std("0.5,0.5,0.5,0.25,0.25,0.25") == ((0.5,) * 3, (0.25,) * 3)
    assert torch.allclose(input_transform("torch:sigmoid")(x), torch.sigmoid(x))
    for bad in ("imagenett", "0.5,0.5,0.5", "1,1,1,0,1,1"):
        with pytest.raises(ValueError, match="not a preset"):
            input_transform(bad)
    with pytest.raises(ValueError, match="cannot be imported"):
        input_transform("no_such_module:f")


def test_preprocessing_is_part_of_the_model_and_of_its_identity():
    x = torch.rand(2, 3, 8, 8)
    raw = build_classifier(f"{__name__}:brightness_net", num_classes=2, preprocess="none")
    assert torch.allclose(raw(x), Brightness()(x))
    assert spec("none").fingerprint()["classifier"] != spec("imagenet").fingerprint()["classifier"]
    cfg = load_config([], [])
    assert "preprocess" not in model_key(cfg.classifier) and "preprocess" not in model_key(cfg.vlm)  # cache keys kept
    assert model_key(load_config([], ["classifier.preprocess=none"]).classifier)["preprocess"] == "none"


def test_a_checkpoint_of_another_class_count_is_one_line_with_the_fix(tmp_path):
    save_classifier(build_classifier("resnet18", num_classes=5), tmp_path / "five.pt")
    with pytest.raises(CheckpointMismatch) as err:
        build_classifier("resnet18", num_classes=10, checkpoint=tmp_path / "five.pt")
    message = str(err.value)
    assert "has 5 classes, the config 10" in message and "classifier.num_classes=5" in message
    assert "\n" not in message
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatch, match="does not fit classifier.arch=resnet18"):
        build_classifier("resnet18", num_classes=10, checkpoint=tmp_path / "other.pt")


CLASSES = ["dim", "bright"]  # the model's output order


def test_preflight_names_the_preprocessing_that_fixes_a_model_near_chance(folder):
    table = read_dataset(folder, classes=CLASSES)
    assert skipped_files(table) == ["dim/notes.txt"]
    found = preflight(spec("imagenet"), table, CLASSES, image_size=8)
    assert found.rows == 40 and [p for _, p, _ in found.unreadable] == [str((folder / "dim" / "broken.png").resolve())]
    assert found.accuracy == pytest.approx(0.5) and found.by_preprocess["none"] == 1.0
    assert len(found.problems) == 1 and "Set classifier.preprocess=none" in found.problems[0]
    assert any("broken.png" in w for w in found.warnings)
    fixed = preflight(spec("none"), table, CLASSES, image_size=8)
    assert fixed.accuracy == 1.0 and not fixed.problems and list(fixed.by_preprocess) == ["none"]


def test_preflight_names_a_permuted_class_order(folder):
    table = read_dataset(folder)  # sorted labels: bright, dim, where the model's output 0 is dim
    found = preflight(spec("none"), table, ["bright", "dim"], image_size=8)
    assert found.accuracy == 0.0
    assert len(found.problems) == 1 and "set data.classes=[dim,bright]" in found.problems[0]


def test_run_preflight_stops_with_one_line_before_any_heavy_work(folder, tmp_path):
    cfg = load_config([], [f"data.source={folder}", f"classifier.arch={__name__}:brightness_net",
                           "classifier.num_classes=2", "data.image_size=8", f"run.root={tmp_path / 'runs'}",
                           "vlm.arch=conceptworld-tiny", f"vlm.pretrained={_tiny_vlm(tmp_path)}"])
    cfg.data.classes = CLASSES
    table = read_dataset(folder, classes=CLASSES)
    with pytest.raises(PreflightFailed, match=r"^preflight: .*Set classifier\.preprocess=none \(check\.rows=0"):
        run_preflight(cfg, table, CLASSES)
    cfg.classifier.preprocess = "none"
    found = run_preflight(cfg, table, CLASSES)
    assert found.accuracy == 1.0 and found.vlm_zero_shot is not None  # an untrained tiny CLIP: warned, not fatal
    assert any("VLM does not know these classes" in w for w in found.warnings)


def _tiny_vlm(tmp_path):
    from conceptlens.models import build_vlm, save_vlm

    path = tmp_path / "vlm.pt"
    save_vlm(build_vlm("conceptworld-tiny"), path)
    return path


def test_the_trust_check_is_scored_on_what_the_vlm_truly_cannot_see():
    from conceptlens.evaluation.observer import observer_section

    rng = np.random.default_rng(0)
    present = rng.random((400, 3)) < 0.5
    scores = np.stack([present[:, 0] + rng.normal(0, 0.3, 400),  # seen
                       rng.normal(0, 1, 400),  # blind
                       present[:, 2] + rng.normal(0, 0.3, 400)], 1)  # seen
    names = ["a=1", "b=1", "c=1"]

    def scored(flagged):
        return observer_section(scores, scores > 0.5, names, present, names, flagged, zero_shot=0.9,
                                recipe="supervised", unseen_groups=[], presented=[], sentences=[])

    out = scored(["c=1"])
    assert out["blind"] == ["b=1"] and out["missed"] == ["b=1"] and out["false_flags"] == ["c=1"]
    assert out["seen_flagged_share"] == 0.5 and out["concepts"]["a=1"]["auroc"] > 0.9 and out["upper_bound"]
    out = scored(["b=1"])
    assert out["caught"] == ["b=1"] and out["missed"] == [] and out["seen_flagged"] == []
