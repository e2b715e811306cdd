"""The fidelity goals of issue 10, asserted on the scorecard: blamed concepts that are right (VLM source, the
cells presented as findings), planted concepts first, the head-fault slice localised in the head, on the demo
and on the second scenario set (conf/experiments/second_set.yaml: other classes and attribute groups, all four
kinds); and a world with no planted scenario (conf/experiments/null_world.yaml) that must not call more false
cells than the FDR allows; root causes (the chosen pipeline's purity and coverage, every rare subgroup in a
cluster of its own) on the demo and the second set; sentences (each planted scenario named by the failure mode
shown for its cluster, no distractor shown) on the demo and the second set; neurons (each spurious correlation's
attribute names its class's top voted neuron, the repaired head lifts its slice) on the demo and the second set
(there without images and without registering, so the demo's repaired version keeps the registry's alias).

The runtime filter's goals (misclassification above every baseline, PGD 8/255, false alarms, unseen attacks) and
its alerts (flagged errors named after their own failure mode) on the demo and the second set.

Budget: the second set is the demo's size (its gaps and numbers are the README's), but reuses the demo's tiny
CLIP, skips the VLM split, attacks 200 rows per split and leaves the adaptive attack to the README's
measurement; the null world is smaller (3000 training images, 1000 + 1000 analysed) and reuses it too. A goal measured short of its bar is declared in SHORT with the measured value and runs as a
strict xfail: it shows in every run, and the day it is met the xfail fails and must be removed.
"""
import json
from pathlib import Path

import pytest

from conceptlens.config import load_config
from conceptlens.evaluation.goals import (MIN_LOCALISED, MIN_PRECISION, MIN_PURITY, MIN_RECALL, MIN_SHARE,
                                          MIN_TOP_CAUSE)
from conceptlens.jobs import analyze, attack, embed, evaluate, explain, monitor, neurons, rootcause, world

pytestmark = pytest.mark.slow
EXPERIMENTS = Path(__file__).resolve().parents[2] / "conf" / "experiments"
DEMO = EXPERIMENTS.parent / "demo.yaml"
# (run, goal) -> why it is short, with the number measured (README: "the scorecard"); one entry per sub-goal, so
# that a sibling of a short sub-goal that regresses fails instead of hiding inside the same expected failure
SHORT = {
    ("second_set", "blamed_precision"): "0.86 on the second set (37 of 43 presented cells are true causes)",
    ("null_world", "blamed_precision"): "0.85 on this null world (33 of 39)",
    ("null_world", "fdr"): "false discovery proportion 0.15 on this null world (0.18 over three full-size seeds)",
    ("demo", "localised.hexagon_in_fog"): "0.35 of hexagon_in_fog's errors localised in the encoder (25 of 72)",
    ("demo", "sentence_first.dark_circle"): "dark_circle's cluster shows its failure mode 4th",
    ("second_set", "alerts"): "small_crescent and small_triangle dominate no cluster, so no alert can name them",
    ("second_set", "filter_pgd_eps8"): "PGD ε = 8/255: AUROC 0.941 (200 attacked rows per split)",
    ("demo", "filter_above_baselines"): "paired, vs stacked given the same signals: +0.001 [-0.003, +0.004]",
    ("second_set", "filter_above_baselines"): "paired, vs stacked given the same signals: -0.001 [-0.002, -0.000]",
    ("demo", "filter_unseen.eps2"): "ε = 2/255 unseen (heads fitted on 4 and 8): AUROC 0.868",
    ("second_set", "filter_unseen.eps2"): "ε = 2/255 unseen: AUROC 0.752 (200 attacked rows per split)",
    ("second_set", "filter_unseen.eps4"): "ε = 4/255 unseen: AUROC 0.868",
    ("second_set", "filter_unseen.fgsm"): "FGSM unseen: AUROC 0.843",
    ("second_set", "filter_unseen.apgd"): "APGD unseen: AUROC 0.883",
    ("second_set", "filter_unseen.pgd"): "PGD unseen: AUROC 0.875",
}
RUNS = ("demo", "second_set")  # the scenario sets run through every command


def scenarios(run: str, kinds: tuple[str, ...] = ()) -> list[str]:
    """The names of ``run``'s scenarios (of ``kinds``, default all), from its configs: known when tests are
    collected, so that each sub-goal is a test case of its own."""
    configs = [DEMO] + ([EXPERIMENTS / f"{run}.yaml"] if run != "demo" else [])
    return [s.name for s in load_config([str(c) for c in configs]).world.scenarios if not kinds or s.kind in kinds]


def expect_short(request, run: str, goal: str) -> None:
    """A sub-goal measured short runs as a strict xfail (it shows in every run; met one day, it fails)."""
    if (run, goal) in SHORT:
        request.applymarker(pytest.mark.xfail(strict=True, reason=SHORT[run, goal]))


def pipeline(root: Path, configs: list[str], overrides: list[str], causes: bool = True) -> dict:
    """world → embed → analyze (→ attack → rootcause → explain → monitor → neurons) → evaluate on ``configs``; the
    scorecard."""
    argv = [a for c in configs for a in ("--config", c)] + [f"run.root={root}"] + overrides
    steps = ((world, embed, analyze, attack, rootcause, explain, monitor, neurons, evaluate) if causes
             else (world, embed, analyze, evaluate))
    for step in steps:
        assert step.main(argv) == 0, step.__name__
    name = next(o.split("=", 1)[1] for o in overrides if o.startswith("run.name="))
    return json.loads((root / name / "evaluate" / "scorecard.json").read_text())


def demo_vlm(demo_run: Path) -> str:
    return json.loads((demo_run / "demo" / "world" / "models.json").read_text())["vlm"]


@pytest.fixture(scope="module")
def cards(demo_done, demo_run, demo_config):
    assert demo_done[0] == 0
    vlm = f"vlm.pretrained={demo_vlm(demo_run)}"
    second = pipeline(demo_run, [demo_config, str(EXPERIMENTS / "second_set.yaml")],
                      ["run.name=second_set", "world.splits.vlm=0", vlm, "neurons.visualise.neurons=0",
                       "neurons.model_name=", "monitor.model_name=",  # the demo's models keep the registry's aliases
                       "attack.rows_per_split=200", "monitor.adaptive.rows=0"])  # adaptive: README, measured apart
    null = pipeline(demo_run, [demo_config, str(EXPERIMENTS / "null_world.yaml")],
                    ["run.name=null_world", "world.seed=1", vlm,
                     "world.splits={train: 3000, vlm: 0, calib: 1000, test: 1000}"], causes=False)
    return {"demo": json.loads((demo_run / "demo" / "evaluate" / "scorecard.json").read_text()),
            "second_set": second, "null_world": null}


GOALS = {"blamed_precision": MIN_PRECISION, "blamed_recall": MIN_RECALL,
         "top_blamed_is_a_true_cause": MIN_TOP_CAUSE}


@pytest.mark.parametrize("run", ["demo", "second_set", "null_world"])
@pytest.mark.parametrize("goal", list(GOALS))
def test_blamed_concepts_meet_the_goal(cards, run, goal, request):
    expect_short(request, run, goal)
    g = cards[run]["goals"][goal]
    assert g["target"] == GOALS[goal] and g["value"] >= GOALS[goal] and g["met"], g


@pytest.mark.parametrize("run", RUNS)
def test_every_planted_concept_comes_first_for_its_class(cards, run):
    card = cards[run]
    assert card["world"]["skipped"] == []  # every scenario planted (else `world` would have failed)
    firsts = {k: g for k, g in card["goals"].items() if k.startswith("planted_first.")}
    expected = sum(len(s["classes"]) for s in card["world"]["scenarios"].values())
    assert len(firsts) == expected and all(g["met"] for g in firsts.values()), firsts


def test_the_second_sets_head_fault_is_the_scenario_it_localises(cards):
    """The second set's localisation goal (test_every_localised_scenario_meets_the_goal) is about its head fault,
    scored on enough errors to mean something."""
    local = cards["second_set"]["localisation"]["scenarios"]
    head = [name for name, s in local.items() if s["truth"] == "head"]
    assert head == ["large_diamond_as_square"] and local[head[0]]["errors"] > 20, local
    assert [k for k in cards["second_set"]["goals"] if k.startswith("localised.")] == [f"localised.{head[0]}"]


@pytest.mark.parametrize("run", RUNS)
def test_every_localised_scenario_meets_the_goal(cards, run, request):
    """Fault localisation (encoder or head) agrees with the truth on ≥ 90 % of the errors of each scenario the
    scorecard localises (one per set: the demo's blind spot, the second set's head fault)."""
    found = {k: g for k, g in cards[run]["goals"].items() if k.startswith("localised.")}
    assert len(found) == 1, found
    (goal, g), = found.items()
    expect_short(request, run, goal)
    assert g["target"] == MIN_LOCALISED and g["met"], (g, cards[run]["localisation"]["scenarios"])


def test_the_second_set_is_scored_with_the_same_yardstick(cards):
    """Four kinds planted on groups the demo does not use, and a truth with enough significant cells to score."""
    w = cards["second_set"]["world"]
    assert sorted(s["kind"] for s in w["scenarios"].values()) == \
        ["blind_spot", "head_fault", "rare_subgroup", "spurious_correlation"]
    assert all(s["gap"] >= 0.20 for s in w["scenarios"].values())
    assert cards["second_set"]["semantic"]["truth"]["significant"] >= 20


def test_a_null_world_calls_no_more_false_cells_than_the_fdr_allows(cards, request):
    """No scenario: every failure is natural. Of the cells called significant, the share that are not truly
    significant (the false discovery proportion) must stay within the FDR (analyze.alpha); one small seed here,
    the README gives three full-size seeds (benchmarks/fidelity.py)."""
    card = cards["null_world"]
    assert card["world"]["scenarios"] == {} and card["world"]["planted"] == []
    found = card["semantic"]["vlm"]["reliable"]
    assert found["called"] >= 5 and found["truly_significant"] >= 5  # natural failure modes exist and are found
    expect_short(request, "null_world", "fdr")
    assert (found["called"] - found["hits"]) / found["called"] <= card["semantic"]["alpha"], found


ROOTCAUSE_GOALS = [(run, f"rootcause_{measure}.{name}") for run in RUNS for name in scenarios(run)
                   for measure in ("purity", "share")]


@pytest.mark.parametrize("run,goal", ROOTCAUSE_GOALS)
def test_each_planted_scenario_has_a_pure_cluster_of_its_own(cards, run, goal, request):
    """For every planted scenario, the cluster of the chosen pipeline holding the most of its failures is ≥ 0.90
    pure counting natural errors and holds ≥ 0.80 of them (failures of calib: the clusters the filter's failure
    modes are built from); how far the choice is from the best pipeline by the truth is reported."""
    card = cards[run]
    found = {k for k in card["goals"] if k.startswith("rootcause_")}
    assert found == {g for r, g in ROOTCAUSE_GOALS if r == run}  # every sub-goal the scorecard has is a case here
    assert {card["goals"][g]["target"] for g in found} == {MIN_PURITY, MIN_SHARE}
    expect_short(request, run, goal)
    assert card["goals"][goal]["met"], (card["goals"][goal], card["rootcause"]["chosen"],
                                        card["rootcause"]["best_by_truth"])


SENTENCE_GOALS = [(run, goal) for run in RUNS
                  for goal in (*(f"sentence_first.{n}" for n in scenarios(run)), "no_distractor_shown")]


@pytest.mark.parametrize("run,goal", SENTENCE_GOALS)
def test_every_planted_scenario_is_named_first_and_no_distractor_is_shown(cards, run, goal, request):
    """The default method's failure mode of the cluster holding most of each planted scenario's failures names
    the scenario's class and attribute (its complement for a spurious correlation); no distractor is shown."""
    card = cards[run]
    found = {k for k in card["goals"] if k.startswith("sentence_first.") or k == "no_distractor_shown"}
    assert found == {g for r, g in SENTENCE_GOALS if r == run}  # every planted scenario has its case
    expect_short(request, run, goal)
    assert card["goals"][goal]["met"], (card["explain"]["scenarios"], card["explain"]["distractors"])


SPURIOUS = [(run, name) for run in RUNS for name in scenarios(run, ("spurious_correlation",))]


@pytest.mark.parametrize("run,name", SPURIOUS)
def test_the_spurious_neurons_are_named(cards, run, name, request):
    """The planted attribute names its class's top voted neuron (checked against the truth's own naming of it)."""
    card = cards[run]
    named = {k: g for k, g in card["goals"].items() if k.startswith(f"neuron_named.{name}.")}
    assert named, card["goals"]
    for goal in named:
        expect_short(request, run, goal)
    assert all(g["met"] for g in named.values()), card["neurons"]["naming"]
    for key, found in card["neurons"]["naming"]["spurious"].items():
        if key.startswith(f"{name}."):
            assert found["neurons"][0]["truth"] == found["attribute"]  # the truth names that neuron the same way


@pytest.mark.parametrize("run,name", SPURIOUS)
@pytest.mark.parametrize("goal", ["head_retraining", "repair_beats_ce"])
def test_the_repaired_head_lifts_the_spurious_slice(cards, run, name, goal, request):
    """head_retraining: the edited head lifts the slice by ≥ 10 points at ≤ 1 point of overall accuracy with no
    planted slice worse beyond chance (held-out rows); repair_beats_ce: the retaining-ratio edit does better on the
    slice than plain cross-entropy trained the same way on the same rows (the lower end of the McNemar interval
    above 0)."""
    g = cards[run]["goals"][f"{goal}.{name}"]
    expect_short(request, run, f"{goal}.{name}")
    assert g["met"], (g, cards[run]["neurons"]["repair"])


FILTER_GOALS = ("filter_misclassified", "filter_above_baselines", "filter_pgd_eps8", "filter_false_alarms",
                *(f"filter_unseen.{task}" for task in ("fgsm", "pgd", "apgd", "eps2", "eps4", "eps8")))


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("goal", FILTER_GOALS)
def test_the_runtime_filter_meets_its_goals(cards, run, goal, request):
    """Misclassification AUROC ≥ 0.90 above every baseline (the supervised stacked one included), PGD ε = 8/255
    ≥ 0.95, false alarms on test within ±1.5 points of the target, each unseen attack family and ε ≥ 0.90."""
    assert {k for k in cards[run]["goals"] if k.startswith("filter_")} == set(FILTER_GOALS)
    expect_short(request, run, goal)
    assert cards[run]["goals"][goal]["met"], cards[run]["goals"][goal]


@pytest.mark.parametrize("run", RUNS)
def test_flagged_errors_are_named_after_their_own_failure_mode(cards, run, request):
    """Of each planted scenario's flagged test errors, most are matched (close enough) to a root-cause cluster the
    scenario dominates; a scenario that dominates no cluster (a rare subgroup the index merged) cannot be."""
    expect_short(request, run, "alerts")
    alerts = cards[run]["alerts"]["scenarios"]
    assert set(alerts) == {n for n, s in cards[run]["world"]["scenarios"].items() if s["planted"]}
    scored = {n: s["matched_dominated_share"] for n, s in alerts.items() if s["dominated_clusters"] and s["flagged"]}
    assert len(scored) >= len(alerts) - 1 and all(share > 0.5 for share in scored.values()), alerts
