"""The fidelity goals, asserted on the scorecard, one test case per sub-goal: blamed concepts that are right (VLM
source, the cells presented as findings), planted concepts first, the localised scenario's errors blamed on its
fault site, on the demo and on the second scenario set (conf/experiments/second_set.yaml: other classes and
attribute groups, all four kinds, its own world seed); a world with no planted scenario
(conf/experiments/null_world.yaml) that must not call more false cells than the FDR allows; root causes (for every
planted scenario, the cluster holding most of its failures: purity counting natural errors, share); sentences;
neurons (naming, head retraining, the edit against plain cross-entropy); the runtime filter's goals and its alerts.

Budget: the second set is the demo's size, but reuses the demo's tiny CLIP, skips the VLM split, attacks 200 rows
per split and leaves the adaptive attack to the README's measurement; the null world is smaller (3000 training
images, 1000 + 1000 analysed) and reuses it too.

Which goals are asserted: those met on every seed measured (SHORT, VARIES and FLOORS below say what was measured).
A goal short on every seed is a strict xfail carrying its numbers; one met on some seeds only is reported (a
non-strict xfail); both also assert a floor under the worst seed measured, named as such. Over three world seeds
per scenario set, with intervals: benchmarks/fidelity.py and the README's "Fidelity over seeds".
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
# Measured on this machine with the demo's models trained at model seeds 0 and 1 (`world.model_seed`, 2 torch threads:
# `CONCEPTLENS_TEST_OVERRIDES="world.model_seed=1"`), values "seed 0 / 1"; and on a fresh clone at model seed 0 with one
# thread (`OMP_NUM_THREADS=1 .ci/run`, another trained model), "1 thread" where it moved a goal.
# (run, goal) -> why it is short on every seed measured: a strict xfail (the day it is met it fails and must go);
# one entry per sub-goal, so that a sibling that regresses fails instead of hiding inside the same expected failure
SHORT = {
    ("demo", "localised.hexagon_in_fog"): "encoder share of hexagon_in_fog's test errors 0.38 / 0.45",
    ("demo", "rootcause_purity.hexagon_in_fog"): "0.77 / 0.57 (directions clusters, natural errors counted)",
    ("demo", "repair_beats_ce.star_on_water"): "+0.000 / +0.000: the retaining-ratio term (λ 0.01) changes no prediction",
    ("second_set", "rootcause_purity.small_crescent"): "0.38 / 0.47",
    ("second_set", "rootcause_purity.small_triangle"): "0.32 / 0.32",
    ("second_set", "rootcause_purity.large_diamond_as_square"): "0.62 / 0.65",
    ("second_set", "rootcause_share.striped_heart"): "0.18 / 0.18: stripes decide every class (~950 failures)",
    ("second_set", "repair_beats_ce.striped_heart"): "+0.000 / +0.000",
    ("second_set", "filter_above_baselines"): "vs stacked given the same signals: -0.000 / -0.001",
    ("second_set", "filter_unseen.eps2"): "ε = 2/255 unseen: 0.82 / 0.71 (200 attacked rows per split)",
    ("second_set", "filter_unseen.fgsm"): "FGSM unseen: 0.88 / 0.82",
    ("second_set", "alerts"): "small_crescent and small_triangle dominate no cluster, so no alert can name them",
}
# (run, goal) -> met on one seed measured, not on the other: reported (a non-strict xfail), never asserted
VARIES = {
    ("demo", "rootcause_share.star_on_water"): "0.72 / 0.72 of its calib failures in one cluster; 0.80 at 1 thread",
    ("demo", "rootcause_purity.dark_circle"): "met at seeds 0 and 1; 0.85 at 1 thread",
    ("demo", "filter_above_baselines"): "vs stacked given the same signals: +0.001 [-0.003, +0.004] / +0.001 [-0.003, "
                                        "+0.005]; met at 1 thread (lower end +0.005)",
    ("demo", "alerts"): "hexagon_in_fog: 0.50 / 0.33 of its flagged test errors matched to its cluster; met at 1 thread",
    ("demo", "blamed_precision"): "0.85 / 0.91",
    ("null_world", "blamed_precision"): "0.75 / 0.79 at model seeds 0 / 1; met on a fresh clone's model after the "
                                        "trust check's decisiveness test (issue 27)",
    ("null_world", "fdr"): "false discovery proportion 0.25 / 0.21 at model seeds 0 / 1; within the FDR on a fresh "
                           "clone's model after the trust check's decisiveness test (issue 27)",
    ("demo", "top_blamed_is_a_true_cause"): "1.00 / 0.78",
    ("demo", "planted_first.hexagon_in_fog.hexagon"): "rank 1 / 2",
    ("demo", "no_distractor_shown"): "0 / 1 shown",
    ("demo", "filter_unseen.eps2"): "ε = 2/255 unseen: 0.87 / 0.90",
    ("second_set", "blamed_precision"): "0.90 / 0.76",
    ("second_set", "planted_first.small_triangle.triangle"): "rank 1 / 2",
    ("second_set", "sentence_first.small_triangle"): "rank 1 / 3",
    ("second_set", "no_distractor_shown"): "0 / 1 shown",
    ("second_set", "filter_pgd_eps8"): "0.94 / 0.96",
    ("second_set", "filter_unseen.apgd"): "0.91 / 0.87",
    ("second_set", "filter_unseen.eps4"): "0.91 / 0.84",
    ("second_set", "filter_unseen.eps8"): "0.89 / 0.95",
    ("second_set", "filter_unseen.pgd"): "0.91 / 0.87",
}
RUNS = ("demo", "second_set")  # the scenario sets run through every command
# (run, goal) -> the floor asserted under a goal measured short: under the worst value measured on this machine with
# the demo's models trained at model seeds 0 and 1 (`world.model_seed`; the suite at 2 and at 1 torch thread), by the
# margin a retrained model moves it. A short goal stays an xfail that carries its number; its floor is a plain
# assertion, so what the product does today cannot regress unseen.
FLOORS = {  # (run, goal) -> (">=" or "<=", bound): 0.1 under the worst proportion, 0.05 under an AUROC, a rank 1 worse
    ("demo", "blamed_precision"): (">=", 0.75), ("demo", "top_blamed_is_a_true_cause"): (">=", 0.68),
    ("demo", "planted_first.hexagon_in_fog.hexagon"): ("<=", 3), ("demo", "no_distractor_shown"): ("<=", 2),
    ("demo", "localised.hexagon_in_fog"): (">=", 0.28), ("demo", "rootcause_purity.hexagon_in_fog"): (">=", 0.47),
    ("demo", "rootcause_share.star_on_water"): (">=", 0.62), ("demo", "rootcause_purity.dark_circle"): (">=", 0.75), ("demo", "repair_beats_ce.star_on_water"): (">=", -0.02),
    ("demo", "filter_above_baselines"): (">=", -0.01), ("demo", "filter_unseen.eps2"): (">=", 0.82),
    ("second_set", "blamed_precision"): (">=", 0.66), ("second_set", "no_distractor_shown"): ("<=", 2),
    ("second_set", "planted_first.small_triangle.triangle"): ("<=", 3),
    ("second_set", "sentence_first.small_triangle"): ("<=", 4),
    ("second_set", "rootcause_purity.small_crescent"): (">=", 0.28),
    ("second_set", "rootcause_purity.small_triangle"): (">=", 0.22),
    ("second_set", "rootcause_purity.large_diamond_as_square"): (">=", 0.52),
    ("second_set", "rootcause_share.striped_heart"): (">=", 0.08),
    ("second_set", "repair_beats_ce.striped_heart"): (">=", -0.02),
    ("second_set", "filter_above_baselines"): (">=", -0.01), ("second_set", "filter_pgd_eps8"): (">=", 0.89),
    ("second_set", "filter_unseen.apgd"): (">=", 0.82), ("second_set", "filter_unseen.eps2"): (">=", 0.66),
    ("second_set", "filter_unseen.eps4"): (">=", 0.79), ("second_set", "filter_unseen.eps8"): (">=", 0.84),
    ("second_set", "filter_unseen.fgsm"): (">=", 0.77), ("second_set", "filter_unseen.pgd"): (">=", 0.82),
    ("null_world", "blamed_precision"): (">=", 0.65),
}


@pytest.mark.parametrize("run,goal", list(FLOORS))
def test_a_short_goal_stays_above_its_floor(cards, run, goal):
    """Named as such: a floor under the measured worst seed, not the goal (the goal's own case is its xfail)."""
    g, (op, bound) = cards[run]["goals"][goal], FLOORS[run, goal]
    assert (run, goal) in SHORT or (run, goal) in VARIES
    assert g["value"] is not None and (g["value"] >= bound if op == ">=" else g["value"] <= bound), (g, op, bound)


def scenario_configs(run: str) -> list:
    """``run``'s scenarios, from its configs: known when tests are collected, so that each sub-goal is a test case
    of its own."""
    configs = [DEMO] + ([EXPERIMENTS / f"{run}.yaml"] if run != "demo" else [])
    return list(load_config([str(c) for c in configs]).world.scenarios)


def scenarios(run: str, kinds: tuple[str, ...] = ()) -> list[str]:
    """The names of ``run``'s scenarios (of ``kinds``, default all)."""
    return [s.name for s in scenario_configs(run) if not kinds or s.kind in kinds]


def expect_short(request, run: str, goal: str) -> None:
    """A sub-goal short on every seed measured runs as a strict xfail (it shows in every run; met one day, it fails);
    one met on some seeds only is reported (a non-strict xfail): its floor is what is asserted."""
    if (run, goal) in SHORT:
        request.applymarker(pytest.mark.xfail(strict=True, reason=SHORT[run, goal]))
    elif (run, goal) in VARIES:
        request.applymarker(pytest.mark.xfail(strict=False, reason=f"met on some seeds only: {VARIES[run, goal]}"))


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


PLANTED_FIRST = [(run, f"planted_first.{s.name}.{cls}") for run in RUNS for s in scenario_configs(run) for cls in s.classes]


@pytest.mark.parametrize("run,goal", PLANTED_FIRST)
def test_every_planted_concept_comes_first_for_its_class(cards, run, goal, request):
    card = cards[run]
    assert card["world"]["skipped"] == []  # every scenario planted (else `world` would have failed)
    assert {k for k in card["goals"] if k.startswith("planted_first.")} == {g for r, g in PLANTED_FIRST if r == run}
    expect_short(request, run, goal)
    assert card["goals"][goal]["met"], card["semantic"]["vlm"]["planted"]


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
