"""The scorecard's pieces on small tables whose answers are worked out by hand: the ground-truth risk-ratio
heatmap, precision / recall / direction / top causes of blamed cells, planted ranks (two-valued groups
included), and the world, localisation and runtime sections."""
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conceptlens.evaluation.blame import (agreement, cause_rank, names_cause, rank_correlation, semantic_scores,
                                          top_causes)
from conceptlens.evaluation.ground_truth import NO_TRUTH, Slice, Truth, concept_names, truth_heatmap, two_valued_partner
from conceptlens.evaluation.scorecard import finite, localisation_section, runtime_section, world_section
from conceptlens.evaluation.world_models import PLANTING_HINTS, unplanted_message
from conceptlens.semantic import HeatmapAccumulator
from conceptlens.world import Scenario
from conceptlens.world.scenarios import KINDS
from conceptlens.world.generate import DATA_COLUMNS, manifest_schema, truth_schema

CLASSES = ["circle", "square"]
CONCEPTS = ["lighting=dark", "lighting=bright", "color=red"]
DARK_CIRCLE = Scenario("dark_circle", "rare_subgroup", ("circle",), "lighting=dark")


def small_world():
    """10 circles: the 5 dark ones all fail, the 5 bright ones are all right; red on 2 of each half (no effect).
    10 squares, all right. Per (class, concept): present × failed counts."""
    labels = np.array([0] * 10 + [1] * 10)
    predictions = np.array([1] * 5 + [0] * 5 + [1] * 10)
    dark = np.array([True] * 5 + [False] * 5 + [True, False] * 5)
    red = np.zeros(20, bool)
    red[[0, 1, 5, 6, 10]] = True
    return np.column_stack([dark, ~dark, red]), labels, predictions


def test_truth_heatmap_counts_ratios_fisher_and_bh_by_hand():
    present, labels, predictions = small_world()
    t = truth_heatmap(present, labels, predictions, CLASSES, CONCEPTS).to_pylist()
    dark, bright, red = t[0], t[1], t[2]
    assert (dark["failed_present"], dark["n_present"], dark["failed_absent"], dark["n_absent"]) == (5, 5, 0, 5)
    assert dark["rate_present"] == 1.0 and dark["rate_absent"] == 0.0
    # +0.5 smoothing: log((5.5 / 6) / (0.5 / 6)) = log 11; bright is the mirror image; red 2/4 vs 3/6: log 1
    assert dark["value"] == pytest.approx(math.log(11)) and bright["value"] == pytest.approx(-math.log(11))
    assert red["value"] == pytest.approx(0.0)
    # Fisher, [[5, 0], [0, 5]]: both extreme tables, 2 / C(10, 5); [[2, 2], [3, 3]]: 1
    assert dark["p"] == pytest.approx(2 / 252) and bright["p"] == pytest.approx(2 / 252)
    assert red["p"] == pytest.approx(1)
    # BH over 2 tests, not 3: bright is dark's absence (one finding), so it repeats dark's test and takes its q;
    # (2/252) * 2 / 1 for dark, 1 for red
    assert dark["q"] == pytest.approx(1 / 63) and bright["q"] == pytest.approx(1 / 63) and red["q"] == pytest.approx(1)
    assert [r["significant"] for r in t[:3]] == [True, True, False]
    squares = t[3:]  # never fail: not tested, never significant
    assert all(math.isnan(r["p"]) and not r["significant"] for r in squares)


def test_truth_heatmap_uses_the_analysis_statistics():
    """Fed the true presence as 0/1 scores (the top value of the lighting group, red iff z > 0), the analysis' own
    risk-ratio heatmap gives the same ratios, p- and q-values: the scorecard measures the analysis with its own
    yardstick, only the presence differs."""
    rng = np.random.default_rng(0)
    present = rng.random((400, 3)) < [0.3, 0.5, 0.2]
    present[:, 1] = ~present[:, 0]  # dark and bright: one value of one group per image
    labels = rng.integers(0, 2, 400)
    fails = rng.random(400) < np.where(present[:, 0], 0.5, 0.1)
    predictions = np.where(fails, 1 - labels, labels)
    ours = truth_heatmap(present, labels, predictions, CLASSES, CONCEPTS)
    acc = HeatmapAccumulator(CLASSES, CONCEPTS, presence_threshold=0.0)
    acc.update(present.astype(float), labels, predictions)
    acc.freeze()
    acc.update_presence(present.astype(float), labels, predictions)
    theirs = acc.tables()
    theirs = theirs.filter(pc.equal(theirs["kind"], "risk_ratio"))
    for column in ("value", "p", "q", "significant"):
        assert np.allclose(ours[column].to_numpy(zero_copy_only=False).astype(float),
                           theirs[column].to_numpy(zero_copy_only=False).astype(float)), column
    assert ours["significant"].to_pylist()[0]  # the planted effect is found


def analysis_table(cells: dict, unreliable=()) -> pa.Table:
    """``analyze``'s risk-ratio rows from ``{(class, concept): (log ratio, significant)}``; other cells 0, not called."""
    rows = []
    for cls in CLASSES:
        for c in CONCEPTS:
            value, significant = cells.get((cls, c), (0.0, False))
            rows.append({"kind": "risk_ratio", "class": cls, "concept": c, "value": value,
                         "q": 0.01 if significant else 0.9, "significant": significant, "reliable": c not in unreliable})
    return pa.Table.from_pylist(rows)


def test_precision_recall_direction_and_top_cause_with_a_false_call():
    present, labels, predictions = small_world()
    truth = truth_heatmap(present, labels, predictions, CLASSES, CONCEPTS)  # true: circle × dark (+), bright (−)
    analysis = analysis_table({("circle", "color=red"): (3.0, True), ("circle", "lighting=dark"): (2.0, True),
                               ("circle", "lighting=bright"): (-1.5, True)}, unreliable=["color=red"])
    s = semantic_scores(analysis, truth, CLASSES, CONCEPTS, [DARK_CIRCLE])
    a = s["all"]
    # dark present and bright absent are one finding (a two-valued group counts once): 2 calls, 1 true cell
    assert (a["called"], a["truly_significant"], a["hits"]) == (2, 1, 1)
    assert a["precision"] == pytest.approx(1 / 2) and a["recall"] == 1.0 and a["direction_agreement"] == 1.0
    # the top blamed concept is red, which is no cause: 0 of the 1 class with a true cause
    assert a["top_cause"]["per_class"]["circle"] == {"top": "color=red", "true_cause": False,
                                                     "true_causes": ["lighting=dark"]}
    assert (a["top_cause"]["top_is_true_cause"], a["top_cause"]["classes_with_true_cause"]) == (0, 1)
    r = s["reliable"]  # without the unreliable red: the one call right, a true cause
    assert (r["called"], r["precision"], r["top_cause"]["share"]) == (1, 1.0, 1.0)
    planted = s["planted"]["dark_circle"]["circle"]
    assert (planted["rank"], planted["concept"], planted["blamed"], planted["rank_reliable"]) == \
        (2, "lighting=dark", 2, 1)
    assert planted["risk_ratio"] == pytest.approx(math.exp(2.0))


def test_a_call_the_wrong_way_round_counts_as_a_hit_but_not_as_agreement():
    called = np.array([[True, True]])
    out = agreement(called, np.array([[1.0, 1.0]]), np.array([[True, True]]), np.array([[2.0, -2.0]]))
    assert out["precision"] == 1.0 and out["direction_agreement"] == 0.5 and out["hits_same_direction"] == 1
    tops = top_causes(np.array([[True, False]]), np.array([[-1.0, 0.0]]), np.array([[True, False]]),
                      np.array([[2.0, 0.0]]), ["circle"], ["a", "b"])
    assert tops["top_is_true_cause"] == 0  # blamed, truly significant, but pointing the wrong way


def test_a_false_cell_is_a_ghost_only_without_unadjusted_evidence_the_same_way():
    """Three called cells, none truly significant after BH: a weak real effect (p 0.01, same sign), one the other
    way round, one without evidence (p 0.4)."""
    called, none = np.ones((1, 3), bool), np.zeros((1, 3), bool)
    out = agreement(called, np.array([[1.0, 1.0, 1.0]]), none, np.array([[0.5, -0.5, 0.5]]),
                    np.array([[0.01, 0.01, 0.4]]))
    assert out["precision"] == 0.0 and out["unsupported"] == 2


def test_nothing_called_or_nothing_true_gives_no_rate():
    none = np.zeros((1, 2), bool)
    out = agreement(none, np.zeros((1, 2)), none, np.zeros((1, 2)))
    assert out["precision"] is None and out["recall"] is None and out["direction_agreement"] is None


def test_a_two_valued_group_called_only_by_its_second_value_is_folded_the_right_way_round():
    """Only "bright missing in failures" called: folded into dark, it reads "dark present" (a hit, the same way)."""
    present, labels, predictions = small_world()
    truth = truth_heatmap(present, labels, predictions, CLASSES, CONCEPTS)
    s = semantic_scores(analysis_table({("circle", "lighting=bright"): (-1.5, True)}), truth, CLASSES, CONCEPTS,
                        [DARK_CIRCLE])
    assert (s["all"]["called"], s["all"]["hits"], s["all"]["direction_agreement"]) == (1, 1, 1.0)
    assert s["planted"]["dark_circle"]["circle"]["rank"] == 1


def test_a_two_valued_group_names_the_same_cause_either_way():
    assert two_valued_partner("lighting=dark", concept_names()) == "lighting=bright" and two_valued_partner("background=water", concept_names()) is None
    assert names_cause("lighting=dark", 1.2, DARK_CIRCLE) and names_cause("lighting=bright", -1.2, DARK_CIRCLE)
    assert not names_cause("lighting=bright", 1.2, DARK_CIRCLE) and not names_cause("lighting=dark", -1.2, DARK_CIRCLE)
    water = Scenario("star_on_water", "spurious_correlation", ("star",), "background=water")
    assert names_cause("background=water", -3.0, water) and not names_cause("background=water", 3.0, water)
    assert not names_cause("background=grass", 3.0, water)  # four values: grass present is not water absent
    # "large absent in failures" ranks a small-objects scenario as found
    small = Scenario("small_stars", "rare_subgroup", ("star",), "size=small")
    assert cause_rank([("color=red", 2.0), ("size=large", -1.0)], small)["rank"] == 2
    assert cause_rank([("size=large", 1.0)], small) == {"rank": None, "concept": None, "risk_ratio": None, "blamed": 1}


def test_another_planted_cause_of_the_class_does_not_push_a_scenario_down():
    """Striped images of every class go to heart (a shortcut with other_strength): for triangles, stripes present
    in failures is planted too, so small triangles still rank first behind it; an unplanted concept does count."""
    stripes = Scenario("striped_heart", "spurious_correlation", ("heart",), "pattern=striped", other_strength=0.0)
    small = Scenario("small_triangle", "rare_subgroup", ("triangle",), "size=small")
    found = [("pattern=striped", 1.0), ("color=red", 0.9), ("size=small", 0.8)]
    assert names_cause("pattern=striped", 1.0, stripes, "triangle") and not names_cause("pattern=striped", 1.0, stripes)
    assert cause_rank(found, small, [stripes], "triangle")["rank"] == 2  # behind red, not behind stripes
    assert cause_rank(found[::2], small, [stripes], "triangle")["rank"] == 1
    assert cause_rank(found[::2], small)["rank"] == 2  # without knowing the other scenario


def test_rank_correlation_by_hand():
    value = np.array([[1.0, 2.0, 3.0, 4.0, np.nan]])
    truth = np.array([[10.0, 20.0, 40.0, 30.0, 5.0]])
    # d = (0, 0, 1, -1): 1 - 6 * 2 / (4 * 15) = 0.8 (the NaN cell is left out)
    assert rank_correlation(value, truth) == pytest.approx(0.8)


def test_world_section_marks_planted_and_skipped_scenarios():
    scenarios = [DARK_CIRCLE, Scenario("fog", "blind_spot", ("hexagon",), "weather=fog"),
                 Scenario("empty", "blind_spot", ("cross",), "weather=snow")]
    scenario = np.array([None] * 10 + ["dark_circle"] * 4 + ["fog"] * 5, object)
    correct = np.array([True] * 9 + [False] + [True] + [False] * 3 + [True] * 4 + [False])
    w = world_section(correct, scenario, scenarios)
    assert w["accuracy_rest"] == pytest.approx(0.9)
    assert w["scenarios"]["dark_circle"]["gap"] == pytest.approx(0.65) and w["scenarios"]["dark_circle"]["planted"]
    assert w["scenarios"]["fog"]["gap"] == pytest.approx(0.1) and not w["scenarios"]["fog"]["planted"]
    assert w["planted"] == ["dark_circle"] and w["skipped"] == ["fog", "empty"]  # no rows: nothing planted
    assert finite(w)["scenarios"]["empty"]["gap"] is None


def test_localisation_shares_and_a_known_truth():
    fault = np.array(["encoder", "head", "head", "encoder", "head", "head", "encoder", "head"], object)
    scenario = np.array(["dark_circle", "dark_circle", "dark_circle", None, "edited", "edited", "fog", "fog"],
                        object)
    edited = Scenario("edited", "head_fault", ("square",), "color=red", target="circle")  # only the head changed
    fog = Scenario("fog", "blind_spot", ("hexagon",), "weather=fog")  # never learnt to see through fog
    out = localisation_section(fault, scenario, [DARK_CIRCLE, edited, fog])
    assert out["dark_circle"] == {"errors": 3, "encoder": 1, "head": 2, "encoder_share": pytest.approx(1 / 3),
                                  "head_share": pytest.approx(2 / 3), "truth": None, "agreement": None}
    assert out["edited"]["truth"] == "head" and out["edited"]["agreement"] == 1.0
    assert out["fog"]["truth"] == "encoder" and out["fog"]["agreement"] == 0.5
    assert out["natural"]["errors"] == 1 and out["natural"]["encoder_share"] == 1.0


def test_an_unplanted_scenario_fails_the_world_with_what_to_try_for_its_kind():
    scenarios = [DARK_CIRCLE, Scenario("fog", "blind_spot", ("hexagon",), "weather=fog"),
                 Scenario("water", "spurious_correlation", ("star",), "background=water"),
                 Scenario("edited", "head_fault", ("cross",), "weather=snow", target="star")]
    slices = {"dark_circle": {"n": 40, "gap": 0.2}, "fog": {"n": 50, "gap": 0.123}, "water": {"n": 30, "gap": 0.25},
              "edited": {"n": 0, "gap": float("nan")}}
    fog, edited, flag = unplanted_message(slices, scenarios).splitlines()
    assert fog.startswith("scenario 'fog' (world.scenarios[1], blind_spot) planted no failure: slice gap 0.123 (n=50)")
    assert "on test, under 0.20" in fog and "occlusion=occluded" in fog and "or more classes" in fog
    assert edited.startswith("scenario 'edited' (world.scenarios[3], head_fault)")
    assert "no images in its slice" in edited
    assert edited.endswith("try: raise `strength`") and "world.allow_unplanted=true" in flag
    assert unplanted_message({"dark_circle": {"n": 40, "gap": 0.2}}, [DARK_CIRCLE]) is None  # the bar itself passes
    water = unplanted_message({"water": {"n": 30, "gap": 0.1}}, scenarios[2:3], split="calib")
    assert "on calib" in water and "`other_strength: 0`" in water
    assert set(PLANTING_HINTS) == set(KINDS)


def test_runtime_auroc_per_slice_by_hand():
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.25])
    wrong = np.array([False] * 4 + [True] * 3)
    scenario = np.array([None, "dark_circle", None, None, "dark_circle", "dark_circle", None], object)
    flagged = score > 0.55
    out = runtime_section(score, flagged, wrong, scenario, ["dark_circle"], fpr=0.25)
    assert out["dark_circle"]["auroc"] == 1.0 and out["dark_circle"]["errors"] == 2
    assert out["dark_circle"]["flagged"] == 0.5  # 0.6 is, 0.5 is not
    assert out["natural"]["auroc"] == 0.5  # 0.25 beats 2 of the 4 correct rows
    assert out["overall"]["auroc"] == pytest.approx(10 / 12) and out["overall"]["n"] == 7


def truth_rows() -> list[dict]:
    """Two rows of a world's truth (and its data): "a" in the dark_circle slice, "b" in none."""
    fields = list(manifest_schema()) + list(truth_schema())[1:]
    rows = [{f.name: False if pa.types.is_boolean(f.type) else None for f in fields} for _ in range(2)]
    rows[0] |= {"id": "a", "path": "a.png", "split": "test", "label": "circle", "label_index": 1,
                "scenario": "dark_circle", "lighting": "dark", "lighting_dark": True}
    rows[1] |= {"id": "b", "path": "b.png", "split": "test", "label": "square", "label_index": 2,
                "lighting": "bright", "lighting_bright": True}
    return rows


@pytest.mark.parametrize("layout", ["truth.parquet", "old one-file manifest"])
def test_world_truth_reads_the_truth_and_refuses_unknown_ids(tmp_path, layout):
    """From ``truth.parquet`` beside the manifest; a run folder written before it existed holds the truth in its
    manifest, read from there."""
    with pytest.raises(FileNotFoundError, match=NO_TRUTH):
        Truth.of_world(tmp_path)
    rows = truth_rows()
    if layout == "truth.parquet":
        pq.write_table(pa.Table.from_pylist(rows, manifest_schema()), tmp_path / "manifest.parquet")
        with pytest.raises(FileNotFoundError, match=NO_TRUTH):  # the data alone is no truth
            Truth.of_world(tmp_path)
        pq.write_table(pa.Table.from_pylist(rows[::-1], truth_schema()), tmp_path / "truth.parquet")
    else:
        old = pa.schema([manifest_schema().field(c) for c in DATA_COLUMNS] + list(truth_schema())[1:])
        pq.write_table(pa.Table.from_pylist(rows, old), tmp_path / "manifest.parquet")
    truth = Truth.of_world(tmp_path)
    assert truth.concepts == concept_names() and len(truth.concepts) == 22 and truth.scenarios == []
    entries = [{"name": "dark_circle", "kind": "rare_subgroup", "classes": ["circle"], "attribute": "lighting=dark"},
               {"name": "edited", "kind": "head_fault", "classes": ["square"], "attribute": "color=red",
                "strength": 0.9, "rate": 0.02, "other_strength": None, "target": "circle"}]
    (tmp_path / "config.json").write_text(json.dumps({"world": {"scenarios": entries}}))
    assert Truth.of_world(tmp_path).scenarios == [
        Slice.of(DARK_CIRCLE), Slice("edited", "head_fault", ("square",), "color=red", fault_site="head")]
    assert list(truth.scenario_of(np.array(["b", "a"]))) == [None, "dark_circle"]
    got = truth.present_of(np.array(["a"]))[0]
    assert [truth.concepts[j] for j in np.flatnonzero(got)] == ["lighting=dark"]
    with pytest.raises(ValueError, match="'zzz'.*not in this run's truth"):
        truth.scenario_of(np.array(["a", "zzz"]))


def test_goals_say_what_is_met_and_by_how_much_not():
    from conceptlens.evaluation.goals import goals, render_goals

    found = {"precision": 0.88, "recall": 0.75, "hits": 22, "called": 25, "truly_significant": 29,
             "top_cause": {"share": 1.0, "top_is_true_cause": 4, "classes_with_true_cause": 4}}
    card = {"semantic": {"vlm": {"reliable": found, "planted": {"dark_circle": {"circle": {"rank_reliable": 2}}}}},
            "localisation": {"scenarios": {"dark_circle": {"truth": None, "agreement": None, "errors": 0},
                                           "red_square": {"truth": "head", "agreement": 0.95, "errors": 20,
                                                          "head": 19, "encoder": 1}}}}
    g = goals(card)
    assert [k for k, v in g.items() if not v["met"]] == ["blamed_precision", "planted_first.dark_circle.circle"]
    assert set(g) == {"blamed_precision", "blamed_recall", "top_blamed_is_a_true_cause",
                      "planted_first.dark_circle.circle", "localised.red_square"}  # no goal without a known truth
    text = "\n".join(render_goals(g))
    assert "3 of 5 met" in text and "short by 0.02" in text and "NOT MET: rank 2" in text
    # every proportion with its 95 % Wilson interval and counts: 22 of 25 calls right is [0.70, 0.96]
    assert g["blamed_precision"]["interval"] == pytest.approx([0.7004, 0.9583], abs=1e-3)
    assert "0.88 [0.70, 0.96] (22/25)" in text and g["localised.red_square"]["n"] == 20
    assert goals({"world": {}}) == {}  # sections that did not run set no goal


def test_a_users_truth_table_declares_groups_free_concepts_and_slices():
    """A toy truth: a group column, a free boolean column, a spurious slice with both sides; each row's slice from
    its class; a declaration that does not fit the table is refused by its key."""
    table = pa.table({"image": ["a", "b", "c", "d", "e"], "floor": ["wood", "tile", "wood", None, "tile"],
                      "blurry": [True, False, None, True, False]})
    labels = {"a": "cat", "b": "cat", "c": "dog", "d": "dog", "e": "dog"}
    slices = [{"name": "cats_on_wood", "kind": "spurious_correlation", "classes": ["cat"], "attribute": "floor=wood",
               "both_sides": True, "fault_site": None},
              {"name": "blurry_dogs", "kind": "blind_spot", "classes": ["dog"], "attribute": "blurry"}]
    truth = Truth.from_table(table, groups={"floor": ["wood", "tile"]}, free=["blurry"], slices=slices,
                             id_column="image", labels=labels)
    assert truth.concepts == ["floor=wood", "floor=tile", "blurry"]
    assert truth.present.tolist() == [[True, False, True], [False, True, False], [True, False, False],
                                      [False, False, True], [False, True, False]]
    # b: a cat without wood; c: a dog on wood (the shortcut's other side); d: a blurry dog; a and e: none
    assert list(truth.scenario) == [None, "cats_on_wood", "cats_on_wood", "blurry_dogs", None]
    assert truth.scenarios[0].partner == "floor=tile" and truth.scenarios[1].partner is None
    bad = [({"groups": {"floor": ["wood"]}}, "evaluate.truth.groups.floor: .*holds \\['tile'\\]"),
           ({"groups": {"room": ["a"]}}, "evaluate.truth.groups.room: no column 'room'"),
           ({"free": ["floor"]}, "evaluate.truth.free: column 'floor' .* not boolean"),
           ({"free": ["blurry"], "slices": [dict(slices[1], kind="blind")]}, "kind 'blind' is not one of"),
           ({"free": ["blurry"], "slices": [dict(slices[1], attribute="wet")]}, "attribute 'wet' is not a declared"),
           ({"free": ["blurry"], "slices": [dict(slices[1], fault_site="neck")]}, "fault_site 'neck'"),
           ({}, "declare the attribute columns")]
    for declaration, message in bad:
        with pytest.raises(ValueError, match=message):
            Truth.from_table(table, id_column="image", labels=labels, **{"groups": {}} | declaration)
