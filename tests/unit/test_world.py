import numpy as np
import pytest

from conceptlens.world import (ATTRIBUTE_GROUPS, CLASSES, Scenario, attribute_columns, caption, generate_world,
                               read_manifest, render)
from conceptlens.world.generate import sample_image

SPURIOUS = Scenario("star_on_water", "spurious_correlation", ("star",), "background=water", strength=0.95)
BLIND = Scenario("hexagon_in_fog", "blind_spot", ("hexagon",), "weather=fog")
RARE = Scenario("dotted_heart", "rare_subgroup", ("heart",), "pattern=dotted", rate=0.02)


def test_vocabulary_has_ten_classes_and_at_least_18_binary_attributes():
    assert len(CLASSES) == 10
    assert len(attribute_columns()) >= 18
    assert caption("star", {"color": "red", "background": "water"}, {"color", "background"}) == \
        "a photo of a red star on water"


def test_rendering_is_deterministic_and_attributes_change_pixels():
    label, attrs, _, _ = sample_image(0, "test", 3, [])
    img1 = render(label, attrs, np.random.default_rng(1))
    img2 = render(label, attrs, np.random.default_rng(1))
    assert img1.shape == (64, 64, 3) and img1.dtype == np.uint8
    assert np.array_equal(img1, img2)
    dark = render(label, {**attrs, "lighting": "dark"}, np.random.default_rng(1))
    assert dark.mean() < 0.6 * img1.mean() or attrs["lighting"] == "dark"


def test_every_class_renders_a_distinct_shape():
    attrs = {g.name: g.values[0] for g in ATTRIBUTE_GROUPS} | {"size": "large"}
    images = [render(c, attrs, np.random.default_rng(0)).astype(int) for c in CLASSES]
    for i in range(len(CLASSES)):
        for j in range(i + 1, len(CLASSES)):
            assert np.abs(images[i] - images[j]).mean() > 1, (CLASSES[i], CLASSES[j])


def _train_sample(n=6000):
    return [sample_image(0, "train", i, [SPURIOUS, BLIND, RARE]) for i in range(n)]


def test_scenarios_bend_only_the_training_split():
    train = _train_sample()
    stars = [a["background"] == "water" for lab, a, _, _ in train if lab == "star"]
    others = [a["background"] == "water" for lab, a, _, _ in train if lab != "star"]
    assert np.mean(stars) > 0.9 and 0.15 < np.mean(others) < 0.35  # other classes stay natural (1 in 4)
    assert not any(lab == "hexagon" and a["weather"] == "fog" for lab, a, _, _ in train)
    dotted_hearts = np.mean([a["pattern"] == "dotted" for lab, a, _, _ in train if lab == "heart"])
    assert dotted_hearts < 0.05
    test = [sample_image(0, "test", i, [SPURIOUS, BLIND, RARE]) for i in range(3000)]
    assert np.mean([a["background"] == "water" for lab, a, _, _ in test if lab == "star"]) < 0.4
    assert sum(s == "hexagon_in_fog" for *_, s, _ in test) > 20


def test_slice_membership_follows_the_scenario_kind():
    assert SPURIOUS.contains("star", {"background": "grass"})
    assert not SPURIOUS.contains("star", {"background": "water"})
    assert not SPURIOUS.contains("circle", {"background": "grass"})
    assert BLIND.contains("hexagon", {"weather": "fog"}) and not BLIND.contains("hexagon", {"weather": "rain"})


@pytest.mark.parametrize("bad", [dict(kind="typo"), dict(classes=("dragon",)), dict(attribute="colour=red"),
                                 dict(attribute="color=teal")])
def test_bad_scenarios_are_rejected_with_the_reason(bad):
    args = dict(name="s", kind="blind_spot", classes=("star",), attribute="color=red") | bad
    with pytest.raises(ValueError):
        Scenario(**args)


def test_generate_world_writes_images_and_manifest(tmp_path):
    sizes = {"train": 30, "test": 20}
    table = generate_world(tmp_path / "w", seed=1, image_size=64, split_sizes=sizes, scenarios=[SPURIOUS],
                           workers=2)
    again = generate_world(tmp_path / "w2", seed=1, image_size=64, split_sizes=sizes, scenarios=[SPURIOUS],
                           workers=1)
    assert table.num_rows == 50
    assert table.drop_columns(["path"]).equals(again.drop_columns(["path"]))
    manifest = read_manifest(tmp_path / "w")
    for column in ["id", "path", "split", "label", "scenario", "caption", *attribute_columns()]:
        assert column in manifest.column_names
    from PIL import Image
    first = manifest.to_pylist()[0]
    assert Image.open(first["path"]).size == (64, 64)
    row = first
    assert sum(row[c] for c in attribute_columns() if c.startswith("background_")) == 1
    with pytest.raises(ValueError, match="unknown split"):
        generate_world(tmp_path / "w3", seed=1, image_size=64, split_sizes={"tran": 1}, scenarios=[])
