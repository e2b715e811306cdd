"""The observer, end to end on the demo (issue 27): `analyze` reads the demo's embeddings with the concepts a user
writes (paraphrases, distractors), `evaluate` scores the observer (labelled the upper bound: the demo's tiny CLIP
was told every attribute), the report shows its table and figures, and concept probes calibrate each concept's
detector. The realistic rungs (a CLIP trained on web captions: 4.5 min to train) are measured by
`benchmarks/observer_ladder.py`, not here."""
import json

import pytest

from conceptlens.evaluation.ground_truth import concept_names, two_valued_partner
from conceptlens.jobs import analyze, evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user_phrased(demo_done, demo_run, demo_config, tmp_path_factory):
    """A run `user` that links the demo's world and embeddings, analysed and scored with `conceptworld-user`."""
    folder = tmp_path_factory.mktemp("observer")
    (folder / "user").mkdir()
    for part in ("world", "embed"):
        (folder / "user" / part).symlink_to(demo_run / "demo" / part)
    args = ["--config", demo_config, f"run.root={folder}", "run.name=user", "analyze.concepts=conceptworld-user",
            "analyze.splits=[test]"]
    assert analyze.main(args) == 0
    assert evaluate.main(args) == 0
    return folder, args


def test_evaluate_scores_the_observer_and_labels_the_upper_bound(user_phrased):
    folder, _ = user_phrased
    card = json.loads((folder / "user" / "evaluate" / "scorecard.json").read_text())
    o = card["observer"]
    assert o["recipe"] == "supervised" and o["upper_bound"] and o["unseen_groups"] == []
    kinds = {c: e["kind"] for c, e in o["concepts"].items()}
    assert sorted(c for c, k in kinds.items() if k == "distractor") == ["blurry", "metallic", "person", "text", "wooden"]
    assert all(0 <= e["auroc"] <= 1 and 0 <= e["agreement"] <= 1 for e in o["concepts"].values() if e["auroc"])
    assert {"observer_flags_blind", "observer_seen_not_flagged", "observer_hides_unseen"} <= set(card["goals"])
    assert 0 <= min(o["blame_agreement"].values()) and max(o["blame_agreement"].values()) <= 1


def test_the_report_shows_the_observer(user_phrased):
    from conceptlens.report.build import scorecard

    folder, _ = user_phrased
    section = scorecard(folder / "user")
    assert len(section["figures"]) == 2 and "fidelity against observer quality" in str(section["figures"][1])
    assert any(t["title"].startswith("the observer: supervised — the upper bound") for t in section["tables"])
    assert any(g["area"] == "observer" for g in section["goals"])


def test_probes_calibrate_each_concept_and_decide_its_trust(user_phrased):
    from conceptlens.world.probes import write_probes

    folder, args = user_phrased
    world = json.loads((folder / "user" / "world" / "models.json").read_text())["world"]
    counts = write_probes(world, folder / "probes", 8, seed=1)
    assert set(counts.values()) == {8} and len(counts) == 22
    assert analyze.main(args + [f"analyze.probes={folder / 'probes'}"]) == 0
    probes = json.loads((folder / "user" / "analyze" / "probes.json").read_text())["concepts"]
    assert probes["weather=fog"]["probed"] and probes["weather=fog"]["positives"] == 8
    assert probes["weather=fog"]["negatives"] == 24  # the other three weathers: certain negatives
    assert not probes["blurry"]["probed"]  # no probes of its own: nothing changes for it
    trust = json.loads((folder / "user" / "analyze" / "summary.json").read_text())["trust"]
    assert set(trust["probe_j"]) == {c for c, v in probes.items() if v["probed"]}
    # a probed value below min_probe_j is unreliable, unless it is one of a two-valued pair whose other value is seen
    assert all(c in trust["unreliable_concepts"] for c, j in trust["probe_j"].items()
               if j < trust["min_probe_j"] and two_valued_partner(c, concept_names()) is None)
