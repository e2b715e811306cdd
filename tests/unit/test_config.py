import pytest

from conceptlens.config import Config, ConfigError, config_hash, load_config, world_key


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_a_complete_config():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.classifier.arch == "resnet18"
    assert {s.kind for s in cfg.world.scenarios} == {"spurious_correlation", "blind_spot", "rare_subgroup"}


def test_files_layer_in_order_and_overrides_win(tmp_path):
    a = write(tmp_path, "run: {name: a}\nworld: {seed: 1}\n", "a.yaml")
    b = write(tmp_path, "world: {seed: 2}\n", "b.yaml")
    cfg = load_config([a, b], ["world.splits.test=7"])
    assert (cfg.run.name, cfg.world.seed, cfg.world.splits["test"]) == ("a", 2, 7)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "world:\n  sead: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*world\.sead"):
        load_config([path])


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"command line.*world\.seed"):
        load_config([], ["world.seed=many"])


def test_missing_required_value_names_key(tmp_path):
    path = write(tmp_path, "world:\n  scenarios:\n    - {name: s, classes: [star], attribute: background=water}\n")
    with pytest.raises(ConfigError, match=r"world\.scenarios\[0\]\.kind"):
        load_config([path])


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["nope.yaml"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config([], ["world.seed"])


def test_hash_changes_with_content_only():
    a, b = load_config(), load_config()
    assert config_hash(a.world) == config_hash(b.world)
    assert config_hash(a.world) != config_hash(load_config([], ["world.seed=5"]).world)


def test_an_empty_value_from_the_command_line_turns_registration_off():
    assert load_config([], ["monitor.model_name="]).monitor.model_name is None
    assert load_config([], []).monitor.model_name == "conceptlens-{run}-filter"


def test_new_scenario_knobs_and_the_unplanted_flag_leave_existing_cache_keys_alone(tmp_path):
    """The key of the default world, as it was before other_strength, target and allow_unplanted existed: worlds
    and models cached under it stay valid."""
    cfg = load_config()
    assert cfg.world.allow_unplanted is False
    assert config_hash(world_key(cfg.world)) == "9d852403bc5a"
    assert world_key(load_config([], ["world.allow_unplanted=true"]).world) == world_key(cfg.world)
    path = write(tmp_path, "world:\n  scenarios:\n    - {name: s, kind: head_fault, classes: [square], "
                           "attribute: weather=fog, target: triangle}\n"
                           "    - {name: w, kind: spurious_correlation, classes: [star], attribute: background=water, "
                           "other_strength: 0}\n")
    edited, water = load_config([path]).world.scenarios
    assert (edited.target, water.other_strength) == ("triangle", 0.0)
    assert world_key(load_config([path]).world)["scenarios"][1]["other_strength"] == 0.0  # set: part of the key
