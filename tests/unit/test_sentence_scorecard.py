"""The scorecard's sentence section on hand-made tables: which sentence names which planted scenario (the
complement for a spurious correlation's own class, the value for a blind spot and for a shortcut's other side),
the ranks among validated and among all sentences, and the distractor counts per method."""
import pyarrow as pa

from conceptlens.evaluation.sentences import explain_section
from conceptlens.world.scenarios import Scenario

WATER = Scenario(name="water_star", kind="spurious_correlation", classes=("star",), attribute="background=water",
                 other_strength=0.0)
FOG = Scenario(name="fog_heart", kind="blind_spot", classes=("heart",), attribute="weather=fog")
GRASS = Scenario(name="grass_circle", kind="spurious_correlation", classes=("circle",), attribute="background=grass",
                 other_strength=0.0)
LOST = Scenario(name="lost", kind="blind_spot", classes=("circle",), attribute="weather=snow")


def sentence(cluster, method, rank, text, obj, terms, validated, score, shown=False, distractor=False):
    return {"cluster": cluster, "method": method, "rank": rank, "sentence": text, "object": obj, "terms": terms,
            "distractor": distractor, "score": score, "validated": validated, "shown": shown}


def tables():
    """Clusters 0 and 4: star; 1 and 3: heart (3 holds one star failure of water_star, and grass_circle's
    other side); 2 and -1: undescribed."""
    s = sentence
    rows = [
        # cluster 0 (star), fpdiff: the complement "not on water" with the star is 4th validated, 3rd overall
        s(0, "fpdiff", 1, "a photo of a star on sand", "star", ["background=sand"], True, 5.0, shown=True),
        s(0, "fpdiff", 2, "a photo of a star on water", "star", ["background=water"], True, 4.0),
        s(0, "fpdiff", 3, "a photo of a star not on water", "star", ["background!=water"], False, 3.0),
        s(0, "fpdiff", 4, "a photo of an object not on water", None, ["background!=water"], True, 2.0),
        s(0, "fpdiff", 5, "a photo of a small star not on water", "star", ["size=small", "background!=water"],
          True, 1.5),
        s(0, "fpdiff", 6, "a photo of a star at night", "star", ["time=night"], True, 1.0, distractor=True),
        # cluster 0, tops: a distractor shown first, then the complement
        s(0, "tops", 1, "a photo of a star at night", "star", ["time=night"], True, 0.9, shown=True, distractor=True),
        s(0, "tops", 2, "a photo of a star not on water", "star", ["background!=water"], True, 0.8),
        # cluster 4 (star): the complement scored above cluster 0's, for rank_class
        s(4, "fpdiff", 1, "a photo of a large star not on water", "star", ["size=large", "background!=water"],
          True, 4.5, shown=True),
        s(4, "tops", 1, "a photo of a large star", "star", ["size=large"], True, 0.7, shown=True),
        # cluster 1 (heart): fog is 3rd (fpdiff); in tops the fog sentence is not validated
        s(1, "fpdiff", 1, "a photo of a heart in the rain", "heart", ["weather=rain"], True, 3.0, shown=True),
        s(1, "fpdiff", 2, "a photo of a heart not in fog", "heart", ["weather!=fog"], True, 2.5),
        s(1, "fpdiff", 3, "a photo of a heart in fog", "heart", ["weather=fog"], True, 2.0),
        s(1, "tops", 1, "a photo of a heart in fog", "heart", ["weather=fog"], False, 0.9),
        s(1, "tops", 2, "a photo of a heart at night", "heart", ["time=night"], True, 0.8, distractor=True),
        s(1, "tops", 3, "a photo of a heart", "heart", [], True, 0.7, shown=True),
        # cluster 3 (heart): grass_circle's other side, named by the value with the generic object
        s(3, "fpdiff", 1, "a photo of a heart not on grass", "heart", ["background!=grass"], True, 2.0, shown=True),
        s(3, "fpdiff", 2, "a photo of an object on grass", None, ["background=grass"], True, 1.0),
        s(3, "tops", 1, "a photo of a circle on grass", "circle", ["background=grass"], True, 0.5),
        s(3, "tops", 2, "a photo of a heart on grass", "heart", ["background=grass"], True, 0.4, shown=True),
    ]
    hard = [  # (id, class, cluster, wrong)
        ("a1", "star", 0, True), ("a2", "star", 0, True), ("a3", "star", 0, True), ("a4", "star", 0, True),
        ("a5", "star", 3, True), ("a6", "star", 0, True), ("a7", "star", -1, False),
        ("a8", "star", 4, True), ("a9", "star", 4, True),
        ("b1", "heart", 1, True), ("b2", "heart", 1, True), ("b3", "heart", 1, True), ("b4", "heart", 1, True),
        ("h9", "heart", 3, True), ("h10", "heart", 3, True),
        ("c1", "circle", 2, True), ("c2", "circle", 2, True), ("c3", "circle", -1, True),
    ]
    hard_table = pa.table({"id": [h[0] for h in hard], "class": [h[1] for h in hard],
                           "cluster": [h[2] for h in hard], "pick": [i % 2 == 0 for i in range(len(hard))],
                           "wrong": [h[3] for h in hard]})
    scenario_of = {"a1": "water_star", "a2": "water_star", "a3": "water_star", "a4": "water_star",
                   "a5": "water_star", "a6": None, "a7": "water_star", "a8": None, "a9": None,
                   "b1": "fog_heart", "b2": "fog_heart", "b3": "fog_heart", "b4": "fog_heart",
                   "h9": "grass_circle", "h10": "grass_circle", "c1": "lost", "c2": "lost", "c3": "lost"}
    return pa.Table.from_pylist(rows), hard_table, scenario_of


def section():
    sentences, hard, scenario_of = tables()
    return explain_section(sentences, hard, scenario_of, [WATER, FOG, GRASS, LOST], "fpdiff")


def test_spurious_correlation_on_its_own_class_is_named_by_the_complement():
    """Only "background!=water" with the star counts: not the value itself, nor the complement with the generic
    object; rank among validated (4), among all ranked (3), among validated star sentences by score (2: cluster
    4's "a large star not on water" at 4.5, after "a star on sand" at 5.0)."""
    out = section()
    assert out["default"] == "fpdiff"
    water = out["scenarios"]["water_star"]
    assert water["failures"] == 5  # a7 is not wrong
    assert water["cluster"] == 0 and water["class"] == "star" and water["share"] == 4 / 5
    assert water["methods"]["fpdiff"] == {"rank": 4, "rank_class": 2, "rank_unvalidated": 3,
                                          "shown": "a photo of a star on sand"}
    assert water["methods"]["tops"] == {"rank": 2, "rank_class": 2, "rank_unvalidated": 2,
                                        "shown": "a photo of a star at night"}


def test_blind_spot_and_other_side_are_named_by_the_value():
    out = section()
    fog = out["scenarios"]["fog_heart"]
    assert fog["failures"] == 4 and fog["cluster"] == 1 and fog["class"] == "heart" and fog["share"] == 1.0
    assert fog["methods"]["fpdiff"]["rank"] == 3  # "not in fog" (rank 2) does not name it
    assert fog["methods"]["fpdiff"]["rank_unvalidated"] == 3
    assert fog["methods"]["tops"]["rank"] is None  # its only fog sentence is not validated
    assert fog["methods"]["tops"]["rank_unvalidated"] == 1
    assert fog["methods"]["tops"]["shown"] == "a photo of a heart"
    grass = out["scenarios"]["grass_circle"]
    assert grass["cluster"] == 3 and grass["class"] == "heart"  # heart rows taken for circles
    assert grass["methods"]["fpdiff"]["rank"] == 2  # "an object on grass"; "not on grass" does not name it
    # a circle sentence does not name the heart cluster's scenario; "a heart on grass" does
    assert grass["methods"]["tops"]["rank"] == 2 and grass["methods"]["tops"]["rank_unvalidated"] == 2


def test_failures_outside_described_clusters_have_no_cluster():
    lost = section()["scenarios"]["lost"]
    assert lost == {"failures": 3, "cluster": None, "methods": {}}


def test_distractors_shown_and_validated_per_method():
    d = section()["distractors"]
    assert set(d) == {"fpdiff", "tops"}
    assert d["fpdiff"] == {"shown": 0, "validated": 1, "examples": []}
    assert d["tops"] == {"shown": 1, "validated": 2, "examples": ["a photo of a star at night"]}
