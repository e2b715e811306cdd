import hashlib
import json
from dataclasses import asdict, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from conceptlens.config import ScenarioConfig
from conceptlens.models.classifier import Classifier
from conceptlens.recipes.data import to_float
from conceptlens.recipes.head_fault import edit_head, encoder_features, plant_head_fault
from conceptlens.world import (ATTRIBUTE_GROUPS, CLASSES, GROUPS, Scenario, attribute_columns, caption,
                               generate_world, read_manifest, read_truth, render, split_arrays, split_truth)
from conceptlens.world.generate import DATA_COLUMNS, manifest_schema, sample_image, truth_schema

SPURIOUS = Scenario("star_on_water", "spurious_correlation", ("star",), "background=water", strength=0.95)
BLIND = Scenario("hexagon_in_fog", "blind_spot", ("hexagon",), "weather=fog")
RARE = Scenario("dotted_heart", "rare_subgroup", ("heart",), "pattern=dotted", rate=0.02)
HEAD = Scenario("foggy_square", "head_fault", ("square",), "weather=fog", strength=0.9, target="triangle")


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
    assert not SPURIOUS.contains("circle", {"background": "water"})  # other classes keep their natural share
    exclusive = Scenario("striped_heart", "spurious_correlation", ("heart",), "pattern=striped", other_strength=0.0)
    assert exclusive.contains("heart", {"pattern": "plain"}) and not exclusive.contains("heart", {"pattern": "striped"})
    assert exclusive.contains("circle", {"pattern": "striped"})  # the shortcut's other side
    assert not exclusive.contains("circle", {"pattern": "dotted"})


@pytest.mark.parametrize("bad, reason", [
    (dict(kind="typo"), "kind"), (dict(classes=("dragon",)), "classes"), (dict(attribute="colour=red"), "attribute"),
    (dict(attribute="color=teal"), "value"), (dict(strength=1.5), "strength=1.5"),
    (dict(kind="spurious_correlation", other_strength=-0.1), "other_strength=-0.1"),
    (dict(other_strength=0.0), "other_strength is a spurious_correlation knob"),
    (dict(target="circle"), "target is a head_fault knob"),
    (dict(kind="head_fault"), "head_fault needs target"), (dict(kind="head_fault", target="star"), "other than"),
    (dict(kind="head_fault", target="dragon"), "'dragon'")])
def test_bad_scenarios_are_rejected_with_the_reason(bad, reason):
    args = dict(name="s", kind="blind_spot", classes=("star",), attribute="color=red") | bad
    with pytest.raises(ValueError, match=f"scenario 's'.*{reason}"):
        Scenario(**args)


def test_scenarios_load_from_config_entries_old_and_new():
    entry = asdict(ScenarioConfig(name="s", kind="head_fault", classes=["square"], attribute="weather=fog",
                                  target="triangle"))
    assert Scenario.from_dict(entry) == replace(HEAD, name="s", strength=0.95)
    old = {"name": "s", "kind": "blind_spot", "classes": ["star"], "attribute": "weather=fog"}  # before the knobs
    assert Scenario.from_dict(old) == Scenario("s", "blind_spot", ("star",), "weather=fog")


def test_other_strength_sets_the_other_classes_share_in_training_only():
    never = replace(SPURIOUS, strength=1.0, other_strength=0.0)
    for scenario, expected in [(never, 0.0), (replace(never, other_strength=0.6), 0.6)]:
        train = [sample_image(0, "train", i, [scenario]) for i in range(3000)]
        assert all(a["background"] == "water" for lab, a, _, _ in train if lab == "star")
        others = [a["background"] == "water" for lab, a, _, _ in train if lab != "star"]
        assert abs(np.mean(others) - expected) < 0.04, scenario
        for split in ("calib", "test"):  # natural: 1 in 4
            held_out = [a["background"] == "water" for lab, a, _, _ in
                        (sample_image(0, split, i, [scenario]) for i in range(2000)) if lab != "star"]
            assert 0.2 < np.mean(held_out) < 0.3, split


def test_unset_other_strength_keeps_todays_draws():
    """Byte-identical worlds for configs without the knob, so worlds and models cached before it stay valid:
    the digest was taken with the scenarios module as it was before other_strength existed."""
    digest = hashlib.sha256()
    for i in range(400):
        label, attributes, scenario, rng = sample_image(0, "train", i, [SPURIOUS, BLIND, RARE])
        digest.update(repr((label, sorted(attributes.items()), scenario, int(rng.integers(2**31)))).encode())
    assert digest.hexdigest()[:16] == "1caba84ac1bdaa8c"
    for i in range(300):  # other classes draw as if the scenario were not there
        label, attributes, _, rng = sample_image(0, "train", i, [SPURIOUS])
        if label != "star":
            plain = sample_image(0, "train", i, [])
            assert attributes == plain[1] and rng.bit_generator.state == plain[3].bit_generator.state


def test_a_head_fault_leaves_the_training_data_alone_and_owns_its_class_with_the_value():
    for i in range(200):
        plain, bent = sample_image(0, "train", i, []), sample_image(0, "train", i, [HEAD])
        assert plain[:2] == bent[:2] and plain[3].bit_generator.state == bent[3].bit_generator.state
    assert HEAD.contains("square", {"weather": "fog"}) and not HEAD.contains("square", {"weather": "rain"})
    assert not HEAD.contains("triangle", {"weather": "fog"})


def test_fault_site_is_known_for_head_faults_and_occluding_blind_spots():
    assert HEAD.fault_site == "head"
    assert BLIND.fault_site == "encoder"  # fog hides the shape
    assert replace(BLIND, attribute="occlusion=occluded").fault_site == "encoder"
    assert replace(BLIND, attribute="color=red").fault_site is None  # the shape is intact: either could fail
    assert SPURIOUS.fault_site is None and RARE.fault_site is None


def tiny_classifier(n=900, seed=0):
    """A 3-class world of uint8 ``(3, 4, 4)`` images: class k brightens row k of channel 0, fog (on ~30% of
    every class) brightens channel 2; an orthogonal linear encoder, a nearest-class-mean head on its features.
    Returns ``clf, images, labels (N,), attributes {"weather": value index (N,)}``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    fog = torch.rand(n, generator=g) < 0.3
    x = 100 + 20 * torch.rand(n, 3, 4, 4, generator=g)
    x[torch.arange(n), 0, labels] += 80
    x[fog, 2] += 60
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(48, 48))
    with torch.no_grad():
        encoder[1].weight.copy_(torch.linalg.qr(torch.randn(48, 48, generator=g))[0])
        clf = Classifier(encoder, nn.Linear(48, 3)).eval()
        images = x.round().to(torch.uint8)
        features = clf.features(to_float(images, "cpu"))
        means = torch.stack([features[labels == k].mean(0) for k in range(3)])
        clf.head.weight.copy_(means)
        clf.head.bias.copy_(-(means ** 2).sum(1) / 2)
    weather = GROUPS["weather"].values
    return clf, images, labels.numpy(), {"weather": np.where(fog.numpy(), weather.index("fog"), 0)}


@torch.no_grad()
def test_head_fault_sends_the_slice_to_the_target_with_the_smallest_edit_and_an_untouched_encoder():
    clf, images, labels, attributes = tiny_classifier()
    x = to_float(images, "cpu")
    before, encoder = clf(x).argmax(1), {k: v.clone() for k, v in clf.encoder.state_dict().items()}
    assert (before.numpy() == labels).mean() > 0.97
    head = {k: v.clone() for k, v in clf.head.state_dict().items()}
    logs = []
    info = plant_head_fault(clf, encoder_features(clf, images, device="cpu"), labels, attributes, HEAD, logs.append)
    after = clf(x).argmax(1).numpy()
    square, fog, target = labels == CLASSES.index("square"), attributes["weather"] > 0, CLASSES.index("triangle")
    assert (after[square & fog] == target).mean() >= 0.9 and info["share_sent"] >= 0.9
    assert all(torch.equal(v, clf.encoder.state_dict()[k]) for k, v in encoder.items())
    assert (after[~fog] == before.numpy()[~fog]).mean() > 0.98 and info["without_value_sent"] < 0.02
    edited = [i for i in range(3) if not torch.equal(clf.head.weight[i], head["weight"][i])]
    assert edited == [target]
    # the smallest edit: 1% less of it sends less than the strength
    weight = head["weight"] + 0.99 * (clf.head.weight - head["weight"])
    bias = head["bias"] + 0.99 * (clf.head.bias - head["bias"])
    features = clf.features(x[torch.as_tensor(square & fog)])
    assert ((features @ weight.T + bias).argmax(1) == target).float().mean() < 0.9
    assert "foggy_square" in logs[0] and f"lam {info['lam']:.4g}" in logs[0]


def test_head_fault_needs_a_linear_head_and_a_slice():
    features = torch.randn(10, 4)
    some = torch.arange(10) < 5
    with pytest.raises(ValueError, match="Linear head"):
        edit_head(nn.Sequential(nn.Linear(4, 3)), features, some, some, target=1, strength=0.9)
    with pytest.raises(ValueError, match="0 of 10 have it"):
        edit_head(nn.Linear(4, 3), features, some, ~some, target=1, strength=0.9)


def test_generate_world_writes_images_manifest_and_truth_beside_it(tmp_path):
    sizes = {"train": 30, "test": 20}
    table = generate_world(tmp_path / "w", seed=1, image_size=64, split_sizes=sizes, scenarios=[SPURIOUS],
                           workers=2)
    again = generate_world(tmp_path / "w2", seed=1, image_size=64, split_sizes=sizes, scenarios=[SPURIOUS],
                           workers=1)
    assert table.num_rows == 50
    assert table.drop_columns(["path"]).equals(again.drop_columns(["path"]))
    assert read_truth(tmp_path / "w").equals(read_truth(tmp_path / "w2"))
    manifest = read_manifest(tmp_path / "w")
    assert manifest.column_names == list(DATA_COLUMNS)  # the data, as a user's manifest holds it
    assert pq.read_schema(tmp_path / "w" / "manifest.parquet").names == list(DATA_COLUMNS)
    assert json.loads(manifest.schema.metadata[b"conceptlens.classes"]) == list(CLASSES)
    truth = read_truth(tmp_path / "w")
    assert truth.schema.names == truth_schema().names
    for column in ["id", "scenario", "caption", *attribute_columns()]:
        assert column in truth.column_names
    assert truth.column("id").to_pylist() == manifest.column("id").to_pylist()
    from PIL import Image
    first = manifest.to_pylist()[0]
    assert Image.open(first["path"]).size == (64, 64)
    row = truth.to_pylist()[0]
    assert sum(row[c] for c in attribute_columns() if c.startswith("background_")) == 1
    with pytest.raises(ValueError, match="unknown split"):
        generate_world(tmp_path / "w3", seed=1, image_size=64, split_sizes={"tran": 1}, scenarios=[])


def test_no_truth_column_is_in_the_manifest():
    assert set(manifest_schema().names) == set(DATA_COLUMNS)
    assert set(truth_schema().names) & set(manifest_schema().names) == {"id"}


def old_layout_world(root, rows: int = 4):
    """A world as written before the truth had its own file: one manifest with the data and the truth."""
    from PIL import Image

    (root / "images" / "test").mkdir(parents=True)
    records = []
    for i in range(rows):
        label, attributes, scenario, rng = sample_image(3, "test", i, [SPURIOUS])
        path = f"images/test/{i:06d}.png"
        Image.fromarray(render(label, attributes, rng, 32)).save(root / path)
        records.append({"id": f"test-{i:06d}", "path": path, "split": "test", "label": label,
                        "label_index": CLASSES.index(label), "scenario": scenario,
                        "caption": caption(label, attributes), **attributes,
                        **{f"{g.name}_{v}": attributes[g.name] == v for g in ATTRIBUTE_GROUPS for v in g.values}})
    old = pa.schema([manifest_schema().field(c) for c in DATA_COLUMNS] + [truth_schema().field(c)
                                                                          for c in truth_schema().names[1:]])
    table = pa.Table.from_pylist(records, schema=old)
    pq.write_table(table, root / "manifest.parquet")
    return table


def test_an_old_layout_world_is_read_as_it_is_and_split_once_in_place(tmp_path):
    root = tmp_path / "old"
    old = old_layout_world(root)
    before = read_truth(root)  # read from the manifest while truth.parquet is absent
    assert before.equals(old.select(truth_schema().names))
    assert read_manifest(root).column_names == list(DATA_COLUMNS)
    arrays = split_arrays(root, "test")
    assert list(arrays["ids"]) == old.column("id").to_pylist()
    assert list(arrays["scenarios"]) == old.column("scenario").to_pylist()

    assert split_truth(root) is True
    assert pq.read_schema(root / "manifest.parquet").names == list(DATA_COLUMNS)
    assert pq.read_table(root / "truth.parquet").equals(before)
    assert pq.read_table(root / "manifest.parquet").drop_columns([]).select(list(DATA_COLUMNS)).equals(
        old.select(list(DATA_COLUMNS)).replace_schema_metadata(manifest_schema().metadata))
    assert not [p.name for p in root.iterdir() if ".tmp" in p.name]  # written aside, then renamed
    again = split_arrays(root, "test")
    assert all(np.array_equal(again[k], arrays[k]) for k in ("ids", "labels", "scenarios"))
    assert all(np.array_equal(again["attributes"][g], arrays["attributes"][g]) for g in arrays["attributes"])
    assert split_truth(root) is False  # once


def test_an_interrupted_split_is_finished_by_the_next(tmp_path):
    root = tmp_path / "half"
    old = old_layout_world(root)
    pq.write_table(old.select(truth_schema().names), root / "truth.parquet")  # truth written, manifest not yet
    assert split_truth(root) is True
    assert pq.read_schema(root / "manifest.parquet").names == list(DATA_COLUMNS)
    assert read_truth(root).equals(old.select(truth_schema().names))


def test_split_arrays_joins_the_truth_by_id_whatever_its_order(tmp_path):
    root = tmp_path / "w"
    old = old_layout_world(root, rows=5)
    split_truth(root)
    truth = pq.read_table(root / "truth.parquet")
    pq.write_table(truth.take(pa.array([4, 2, 0, 3, 1])), root / "truth.parquet")
    arrays = split_arrays(root, "test")
    assert list(arrays["ids"]) == old.column("id").to_pylist()
    assert list(arrays["scenarios"]) == old.column("scenario").to_pylist()
    background = GROUPS["background"]
    assert [background.values[j] for j in arrays["attributes"]["background"]] == old.column("background").to_pylist()
    pq.write_table(truth.slice(1), root / "truth.parquet")
    with pytest.raises(ValueError, match="1 rows .* have no truth"):
        split_arrays(root, "test")


def test_ensure_world_splits_a_cached_old_layout_world_and_says_so_once(tmp_path):
    from conceptlens.config import config_hash, load_config, world_key
    from conceptlens.recipes.conceptworld import WORLD_VERSION, ensure_world

    cfg = load_config(overrides=[f"run.cache_dir={tmp_path}"])
    images = {k: v for k, v in world_key(cfg.world).items() if k != "model_seed"}
    root = tmp_path / "worlds" / config_hash(images, WORLD_VERSION)
    old = old_layout_world(root)
    lines = []
    assert ensure_world(cfg, lines.append) == root  # reused, not regenerated: same hash, so the same models
    assert lines == [f"world: reusing {root} (moved its truth out of manifest.parquet into truth.parquet)"]
    assert pq.read_schema(root / "manifest.parquet").names == list(DATA_COLUMNS)
    assert read_truth(root).equals(old.select(truth_schema().names))
    lines.clear()
    ensure_world(cfg, lines.append)
    assert lines == [f"world: reusing {root}"]
