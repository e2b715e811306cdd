"""`conceptlens compare` on real runs, read from the demo's MLflow store.

Two small runs are made next to the demo, as cheaply as the question allows:
* ``seed1``: the demo's setup (its classifier and tiny CLIP, its scenarios) on a second ConceptWorld sample,
  ``world.seed=1`` with 1000 calib and 1000 test rows: world, embed, analyze, evaluate. Nothing changed but
  the sample, so comparing it with the demo must call no change significant where the intervals overlap, and
  none of its accuracies, slices or filter numbers significant at all.
* ``repaired_head``: the classifier version `neurons` registered as repaired, on the demo world's test rows
  (``classifier.checkpoint=models:/conceptlens-demo-classifier@repaired``): embed, analyze, evaluate (scored against
  the demo world's truth). Against the demo, its planted spurious failure must show as fixed or reduced, and the
  overall accuracy is compared on the same 3000 images by McNemar's paired test (printed for the README);
  ``models:/…@base`` against ``models:/…@repaired`` must resolve to runs of those two classifiers.
  ``seed1`` shares the demo's ids (``test-000000``…) but not its images: never paired.
"""
import json

import mlflow
import pytest

from conceptlens.config import load_config
from conceptlens.jobs import analyze, compare, embed, evaluate, world
from conceptlens.report.compare_stats import overlap
from conceptlens.world import CLASSES  # the classifier's order (a manifest given as data.source is read sorted)

pytestmark = pytest.mark.slow
REPAIRED, BASE = "models:/conceptlens-demo-classifier@repaired", "models:/conceptlens-demo-classifier@base"


def demo_models(demo_run):
    return json.loads((demo_run / "demo" / "world" / "models.json").read_text())


@pytest.fixture(scope="module")
def seed1(demo_done, demo_run, demo_config):
    """The demo's models on a second, smaller sample of the same world: world.seed=1."""
    assert demo_done[0] == 0, demo_done[1][-3000:]
    models = demo_models(demo_run)
    argv = ["--config", demo_config, f"run.root={demo_run}", "run.name=seed1", "world.seed=1",
            "world.splits={train: 0, vlm: 0, calib: 1000, test: 1000}", f"classifier.checkpoint={models['classifier']}",
            f"vlm.pretrained={models['vlm']}", "world.allow_unplanted=true"]  # a small sample may miss a gap
    for job in (world, embed, analyze, evaluate):
        assert job.main(argv) == 0, job.__name__
    return "seed1"


@pytest.fixture(scope="module")
def repaired(demo_done, demo_run, demo_config):
    """The repaired classifier version on the demo world's test rows (the rows of the demo's scorecard): embed,
    analyze (its aligner fitted on those rows: calib is not embedded), evaluate."""
    assert demo_done[0] == 0, demo_done[1][-3000:]
    argv = ["--config", demo_config, f"run.root={demo_run}", "run.name=repaired_head",
            f"vlm.pretrained={demo_models(demo_run)['vlm']}", f"data.source={demo_run / 'demo' / 'world' / 'manifest.parquet'}",
            f"data.classes=[{','.join(CLASSES)}]", "data.splits=[test]", "analyze.fit_split=test", "analyze.splits=[test]"]
    assert embed.main(argv + [f"classifier.checkpoint={REPAIRED}"]) == 0
    assert analyze.main(argv) == 0 and evaluate.main(argv) == 0
    return "repaired_head"


def run_compare(demo_run, a, b, capsys) -> tuple[dict, str]:
    assert compare.main([a, b, f"run.root={demo_run}"]) == 0
    printed = capsys.readouterr().out
    page = printed.strip().splitlines()[-1].removeprefix("page: ")
    return json.loads((demo_run / "compare" / page.split("/")[-2] / "compare.json").read_text()), printed


def spurious(demo_config) -> str:
    return next(s.name for s in load_config([demo_config]).world.scenarios if s.kind == "spurious_correlation")


def test_the_repaired_classifier_fixes_the_planted_spurious_failure(repaired, demo_run, demo_config, capsys):
    result, printed = run_compare(demo_run, "demo", repaired, capsys)
    row = next(r for r in result["slices"]["rows"] if r["name"] == spurious(demo_config))
    assert row["verdict"] in ("fixed", "reduced") and row["significant"] and row["delta"] > 0.1, row
    assert f"{row['name']}" in printed and row["verdict"] in printed
    # the same 3000 test images in both runs: the accuracies are paired (McNemar on the shared rows)
    pairing, acc = result["pairing"], result["accuracy"]
    assert pairing["paired"] and pairing["same_images"] == 3000 and pairing["by"]["digest"] == 3000, pairing
    assert acc["test"] == "mcnemar" and acc["paired"] and acc["rows_paired"] == 3000, acc
    assert acc["delta"] == pytest.approx((acc["discordant"]["net"]) / 3000)
    assert acc["significant"] == (acc["delta_low"] > 0 or acc["delta_high"] < 0)
    assert "McNemar, paired on 3000 rows" in printed
    accuracy_line = next(line for line in printed.splitlines() if line.startswith("accuracy"))
    with capsys.disabled():  # the measured numbers, for the README
        print(f"\n{accuracy_line}\n  p = {acc['p']:.3g}, discordant {acc['discordant']}, "
              f"interval [{acc['delta_low']:+.4f}, {acc['delta_high']:+.4f}]")
    assert result["b"]["commands"].keys() == {"embed", "analyze", "evaluate"}
    # what the repaired run lacks is said, never counted as fixed
    assert "no `rootcause` outputs in run 'repaired_head'" in result["causes"]["absent"]
    assert "no `monitor` outputs" in result["filter"]["absent"]
    assert result["blamed"]["rows"] and result["goals"]["rows"]
    page = (demo_run / "compare" / "demo__vs__repaired_head" / "index.html").read_text()
    assert row["name"] in page and 'id="causes"' in page and "http://" not in page and "https://" not in page
    client = mlflow.MlflowClient(f"sqlite:///{demo_run / 'mlflow.db'}")
    logged = client.get_run(result["mlflow_run_id"])
    assert logged.data.tags["conceptlens.compare.a_run_id"] == result["a"]["run_id"]
    assert logged.data.metrics["slices_fixed"] + logged.data.metrics["slices_reduced"] >= 1


def test_registered_versions_resolve_to_the_runs_of_their_classifiers(repaired, demo_run, demo_config, capsys):
    result, _ = run_compare(demo_run, BASE, REPAIRED, capsys)
    assert result["a"]["name"] in ("demo", "seed1") and result["b"]["name"] == repaired  # the newest with a scorecard
    assert "version" in result["a"]["how"] and "version" in result["b"]["how"]
    row = next(r for r in result["slices"]["rows"] if r["name"] == spurious(demo_config))
    assert row["delta"] > 0 and row["verdict"] != "worse"


def test_two_samples_of_one_setup_change_nothing_significant(seed1, demo_run, capsys):
    result, printed = run_compare(demo_run, "demo", seed1, capsys)
    # the same ids in another world are other images: not paired, the two samples' intervals decide
    assert not result["pairing"]["paired"] and result["pairing"]["ids_shared"] == 1000, result["pairing"]
    assert result["pairing"]["same_images"] == 0 and result["accuracy"]["test"] == "wilson"
    changes = [result["accuracy"], *result["slices"]["rows"], *result["blamed"]["rows"],
               *result["filter"].get("slices", [])]
    with_intervals = [c for c in changes if c["a"] and c["b"] and c["a"]["low"] is not None and c["b"]["low"] is not None]
    assert len(with_intervals) >= 10
    for c in with_intervals:  # the rule: significant exactly where the intervals do not overlap
        assert c["significant"] == (not overlap(c["a"], c["b"])), c
    assert not result["accuracy"]["significant"]
    assert not any(r["significant"] for r in result["slices"]["rows"]), result["slices"]["rows"]
    assert not any(r["significant"] for r in result["filter"].get("slices", []))
    assert [s["section"] for s in result["significant"]] == ["blamed"] * len(result["significant"])
    assert "significant changes:" in printed
