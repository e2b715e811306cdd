"""The ladder of observers (issue 27): web captions, the restyled world, the realistic recipes on a small world,
concept probes and the observer's scorecard section."""
import numpy as np
import pytest
import torch

from conceptlens.config import CaptionsConfig, TrainConfig, VLMConfig, VLMRecipe, model_key
from conceptlens.evaluation.observer import observer_goals, observer_section
from conceptlens.recipes.web_captions import Phrasings, web_caption
from conceptlens.semantic.heatmaps import HeatmapAccumulator
from conceptlens.semantic.probes import calibrate, corrected_share, youden_threshold
from conceptlens.semantic.trust import Trust
from conceptlens.world import ATTRIBUTE_GROUPS, CLASSES, GROUPS, render

PHRASINGS = Phrasings.load()
ALL = {g.name: g.values[0] for g in ATTRIBUTE_GROUPS}


def _said(caption: str, group: str) -> set[str]:
    """The values of ``group`` a caption says, by their phrasings (longest first, so "in the snow" is not "snow")."""
    found = set()
    for value, options in PHRASINGS.values[group].items():
        if any(f" {o} " in f" {caption} " for o in options):
            found.add(value)
    return found


def test_web_captions_mention_each_group_at_the_set_rate_in_varied_words():
    rng = np.random.default_rng(0)
    attributes = {**ALL, "weather": "fog"}
    captions = [web_caption("star", attributes, PHRASINGS, rng, mention=0.3, noise=0.0) for _ in range(3000)]
    mentioned = np.mean([bool(_said(c, "weather")) for c in captions])
    assert 0.26 < mentioned < 0.34
    used = {o for c in captions for o in PHRASINGS.values["weather"]["fog"] if f" {o}" in f" {c}"}
    assert len(used) == len(PHRASINGS.values["weather"]["fog"])  # every synonym turns up
    assert np.mean(["star" in c for c in captions]) > 0.85  # the class is named most of the time


def test_noise_says_another_value_and_unseen_groups_are_never_said():
    rng = np.random.default_rng(1)
    attributes = {**ALL, "background": "water"}
    captions = [web_caption("star", attributes, PHRASINGS, rng, mention=1.0, noise=0.2, unseen=("pattern",))
                for _ in range(3000)]
    wrong = np.mean([_said(c, "background") != {"water"} for c in captions])
    assert 0.16 < wrong < 0.24
    assert not any(_said(c, "pattern") for c in captions)


def test_every_value_has_a_phrasing_and_a_missing_one_is_named(tmp_path):
    assert all(PHRASINGS.values[g.name][v] for g in ATTRIBUTE_GROUPS for v in g.values)
    bad = tmp_path / "synonyms.yaml"
    bad.write_text("templates: ['{}']\nobjects: [thing]\ngroups: {size: {kind: adjective, values: {small: [small]}}}")
    with pytest.raises(ValueError, match="size=large"):
        Phrasings.load(bad)


def test_the_restyled_world_draws_the_same_scene_in_another_look():
    attributes = {**ALL, "weather": "rain"}
    a = render("star", attributes, np.random.default_rng(3), 48).astype(int)
    b = render("star", attributes, np.random.default_rng(3), 48, "restyled").astype(int)
    again = render("star", attributes, np.random.default_rng(3), 48, "restyled").astype(int)
    assert (b == again).all() and np.abs(a - b).mean() > 5
    with pytest.raises(ValueError, match="restyled"):
        render("star", attributes, np.random.default_rng(3), 48, "sepia")


def test_the_recipe_is_part_of_the_cache_key_and_the_default_keeps_old_keys():
    old = {k: v for k, v in model_key(VLMConfig()).items()}
    assert "recipe" not in old and "captions" not in old
    assert model_key(VLMConfig(recipe=VLMRecipe.captions))["recipe"] == VLMRecipe.captions


def _small_world(n=240, size=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    attributes = {g.name: rng.integers(0, len(g.values), n) for g in ATTRIBUTE_GROUPS}
    images = np.stack([render(CLASSES[labels[i]], {g.name: g.values[attributes[g.name][i]] for g in ATTRIBUTE_GROUPS},
                              np.random.default_rng(i), size) for i in range(n)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, attributes


@pytest.mark.parametrize("recipe", ["captions", "supervised"])
def test_each_recipe_trains_a_tiny_clip_on_a_small_world(recipe):
    from conceptlens.models import build_vlm
    from conceptlens.recipes.train_clip import train_clip

    images, labels, attributes = _small_world()
    quick = TrainConfig(epochs=1, batch_size=64, lr=1e-3)
    cfg = VLMConfig(recipe=VLMRecipe(recipe), class_pretrain=quick, pretrain=quick, align=quick, contrastive=quick)
    torch.manual_seed(0)
    vlm = build_vlm(cfg.arch, preprocess="clip")
    before = vlm.encode_texts(["a photo of a star"]).clone()
    info = train_clip(vlm, images, labels, attributes, cfg, device=torch.device("cpu"), log=lambda s: None)
    assert set(info) >= ({"pretrain", "contrastive"} if recipe == "captions" else {"pretrain", "align"})
    assert not torch.allclose(before, vlm.encode_texts(["a photo of a star"]))  # the text tower learnt
    with pytest.raises(ValueError, match="unknown group"):
        train_clip(vlm, images, labels, attributes, VLMConfig(recipe=VLMRecipe.captions, captions=CaptionsConfig(unseen=["smell"])),
                   device=torch.device("cpu"), log=lambda s: None)


# ---- probes ----

def test_youden_threshold_separates_the_probes():
    assert 0.4 < youden_threshold(np.array([0.5, 0.6, 0.7]), np.array([0.1, 0.2, 0.45])) < 0.5


def test_calibration_measures_a_detector_of_known_sensitivity():
    """A group concept detected in 70 % of its probes and falsely in 10 % of its negatives: the calibration says
    so, and a free-standing concept gets the threshold that separates its probes."""
    rng = np.random.default_rng(0)
    concepts = ["w=fog", "w=clear", "wet"]
    labels, scores = [], []
    for i in range(200):
        fog = i < 100
        detected = rng.random() < (0.7 if fog else 0.1)
        labels.append("w=fog" if fog else "w=clear")
        scores.append([1.0 if detected else 0.0, 0.0 if detected else 1.0, rng.normal()])
    for _ in range(50):
        labels.append("wet")
        scores.append([0.5, 0.5, rng.normal(3)])
    cal = calibrate(np.array(scores), labels, concepts)
    assert abs(cal.se[0] - 0.7) < 0.1 and abs(cal.sp[0] - 0.9) < 0.08
    assert cal.probed.all() and np.isnan(cal.threshold[0]) and 0.5 < cal.threshold[2] < 2.5
    assert cal.reliable("w=fog") and cal.as_dict()["concepts"]["wet"]["positives"] == 50
    with pytest.raises(ValueError, match="'snow'"):
        calibrate(np.array(scores), labels[:-1] + ["snow"], concepts)


def test_rogan_gladen_undoes_a_detectors_dilution_of_the_risk_ratio():
    """True shares 0.6 among failures and 0.2 among correct rows (risk ratio far from 1); a detector with
    se 0.7, sp 0.9 sees 0.46 and 0.22. The corrected shares are the true ones again."""
    se, sp = np.array([0.7]), np.array([0.9])
    observed = np.array([0.6 * 0.7 + 0.4 * 0.1, 0.2 * 0.7 + 0.8 * 0.1])
    assert np.allclose(corrected_share(observed, se, sp), [0.6, 0.2])
    assert np.allclose(corrected_share(observed, np.array([np.nan]), sp), observed)  # unprobed: unchanged


def test_a_calibrated_heatmap_corrects_the_ratio_and_keeps_the_test():
    rng = np.random.default_rng(0)
    n = 4000
    labels, predictions = np.zeros(n, int), np.zeros(n, int)
    truly = rng.random(n) < 0.3
    fails = rng.random(n) < np.where(truly, 0.4, 0.1)  # the concept quadruples the failure rate
    predictions[fails] = 1
    detected = np.where(truly, rng.random(n) < 0.6, rng.random(n) < 0.1)
    scores = np.stack([detected.astype(float), rng.normal(size=n)], 1)

    def ratio(calibration):
        acc = HeatmapAccumulator(["a", "b"], ["wet", "dry"], calibration=calibration)
        acc.update(scores, labels, predictions)
        acc.freeze()
        acc.update_presence(scores, labels, predictions)
        return acc.risk_ratios()

    cal = calibrate(np.array([[1.0, 0], [1, 0], [0, 0], [0, 0]] * 5), ["wet", "wet", "dry", "dry"] * 5,
                    ["wet", "dry"])
    cal.se[0], cal.sp[0] = 0.6, 0.9  # the detector's true rates
    plain, corrected = ratio(None), ratio(cal)
    assert np.exp(plain["value"][0, 0]) < 3.0 < np.exp(corrected["value"][0, 0]) < 5.0
    assert plain["p"][0, 0] == corrected["p"][0, 0]


def test_probes_decide_a_probed_concepts_trust_and_a_pair_is_seen_through_either_value():
    trust = Trust(0.9, 10, {"light=bright": 0.9, "light=dark": 0.3, "w=fog": 0.1, "w=rain": 0.9, "w=snow": 0.2,
                            "blurry": 0.75, "wet=yes": 0.9, "wet=no": 0.1}, max_absence_r=0.6,
                  probe_j={"w=fog": 0.2, "w=rain": 0.8, "light=bright": 0.1, "light=dark": 0.9})
    assert trust.reliable("light=bright") and trust.reliable("light=dark")  # dark is seen: the pair is
    assert not trust.reliable("w=fog") and trust.reliable("w=rain")  # the probes overrule the absence check
    assert not trust.reliable("blurry")
    assert not trust.reliable("wet=yes")  # judged as free concepts (neither probes nor a decisiveness): no pair
    assert trust.unseen_concepts == ["w=fog", "blurry", "wet=yes"]


# ---- the scorecard's observer section ----

def test_the_observer_section_scores_the_trust_check_and_what_no_finding_may_name():
    rng = np.random.default_rng(0)
    n = 500
    present = rng.random((n, 3)) < 0.4
    scores = np.stack([present[:, 0] + rng.normal(0, 0.3, n), rng.normal(size=n), present[:, 2] * 0.4 +
                       rng.normal(0, 1, n), rng.normal(size=n)], 1)
    concepts = ["c=1", "p=1", "s=1", "blurry"]
    out = observer_section(scores, scores > 0.5, concepts, present, ["c=1", "p=1", "s=1"], ["p=1", "blurry"],
                           zero_shot=0.9, recipe="captions", unseen_groups=["p"],
                           presented=[("star", "c=1"), ("star", "blurry")],
                           sentences=[{"sentence": "a striped star", "terms": ["p=1"], "distractor": False},
                                      {"sentence": "a star on water", "terms": ["c=1"], "distractor": False}])
    assert out["concepts"]["c=1"]["auroc"] > 0.9 and out["concepts"]["p=1"]["kind"] == "unseen_group"
    assert out["concepts"]["blurry"]["kind"] == "distractor" and out["concepts"]["blurry"]["auroc"] is None
    assert out["blind"] == ["p=1", "s=1"] or out["blind"] == ["p=1"]
    assert "p=1" in out["caught"] and out["presented_hidden"] == ["star: blurry"]
    assert out["sentences_hidden"] == ["a striped star"] and not out["upper_bound"]
    goals = observer_goals(out)
    assert not goals["observer_hides_unseen"]["met"] and goals["observer_hides_unseen"]["value"] == 2
    assert goals["observer_seen_not_flagged"]["met"]


def test_a_concept_whose_score_barely_moves_beyond_the_absence_prompts_is_flagged():
    """Five concepts the VLM sees (their own signal), one it does not (the absence prompt's score plus a little
    noise: correlation under the absence threshold, but hardly any spread of its own)."""
    from conceptlens.semantic.trust import AbsenceCorrelation, assess

    rng = np.random.default_rng(0)
    n = 2000
    absence = rng.normal(0, 1, n)
    seen = [0.3 * absence + rng.normal(0, 1, n) for _ in range(5)]
    blind = 0.2 * absence + rng.normal(0, 0.3, n)
    check = AbsenceCorrelation()
    check.update(np.stack(seen + [blind], 1), absence)
    names = [f"c{i}" for i in range(5)] + ["blind"]
    assert check.value[-1] < 0.8 and check.spread[-1] < 0.4 and np.all(check.spread[:5] > 0.9)
    trust = assess(0.9, 10, check, names)
    assert trust.unseen_concepts == ["blind"] and trust.as_dict()["min_spread"] == 0.75


def test_sentences_naming_a_term_the_vlm_does_not_know_are_found():
    from conceptlens.language import Vocabulary, build_bank
    from conceptlens.language.known import names_unknown, term_sentences

    bank = build_bank(Vocabulary.load("conceptworld-user"), ["star"])
    single, bare = term_sentences(bank)
    assert bank.texts[bare] == "a picture of a shape" and "pattern=striped" in single
    assert bank.terms[single["pattern=striped"]] == ("pattern=striped",)
    assert names_unknown(("weather!=fog",), {"weather=fog"}) and not names_unknown(("weather=rain",), {"weather=fog"})


def test_the_shifted_observer_trains_on_the_same_scenes_drawn_restyled(tmp_path):
    from PIL import Image

    from conceptlens.config import Config
    from conceptlens.recipes.conceptworld import ensure_restyled_vlm_split, ensure_world
    from conceptlens.world import split_arrays

    cfg = Config()
    cfg.run.cache_dir, cfg.run.workers = str(tmp_path), 1
    cfg.world.image_size, cfg.world.scenarios = 32, []
    cfg.world.splits = {"train": 4, "vlm": 12, "calib": 2, "test": 2}
    normal = split_arrays(ensure_world(cfg, log=lambda s: None), "vlm")
    restyled_root = ensure_restyled_vlm_split(cfg, log=lambda s: None)
    restyled = split_arrays(restyled_root, "vlm")
    assert (restyled["labels"] == normal["labels"]).all()
    assert all((restyled["attributes"][g] == normal["attributes"][g]).all() for g in normal["attributes"])
    a, b = (np.asarray(Image.open(p), int) for p in (normal["paths"][0], restyled["paths"][0]))
    assert np.abs(a - b).mean() > 3
    assert ensure_restyled_vlm_split(cfg, log=lambda s: None) == restyled_root  # cached


def test_a_group_value_is_judged_by_how_decisive_the_vlms_group_choice_is():
    """Weather the VLM sees (one value clearly ahead, row by row) and a pattern it does not (its values' scores
    differ by noise far below the softmax's temperature): decisiveness near 1 and near 0."""
    from conceptlens.semantic.trust import AbsenceCorrelation, GroupDecisiveness, assess

    rng = np.random.default_rng(0)
    n = 1000
    names = ["w=fog", "w=rain", "w=snow", "p=plain", "p=striped", "p=dotted"]
    truth = rng.integers(0, 3, n)
    weather = 0.2 + 0.1 * np.eye(3)[truth] + rng.normal(0, 0.005, (n, 3))
    pattern = 0.2 + rng.normal(0, 0.0005, (n, 3))
    scores = np.concatenate([weather, pattern], 1)
    decisive = GroupDecisiveness(names)
    decisive.update(scores[:500])
    decisive.update(scores[500:])
    values = decisive.value
    assert all(values[j] > 0.95 for j in range(3)) and all(values[j] < 0.2 for j in range(3, 6))
    absence = AbsenceCorrelation()
    absence.update(scores, rng.normal(size=n))
    trust = assess(0.9, 10, absence, names, decisiveness=decisive)
    assert trust.unseen_concepts == ["p=plain", "p=striped", "p=dotted"]
