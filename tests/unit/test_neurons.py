"""NeuroInspect's parts on hand-made cases: the counterfactual solver (batched = per-mistake loop, the smallest
shift that flips a known toy mistake, never-flipped rows recorded), the votes, neurons in words (partial
correlation given the class, BH), the repair (only the head, the retaining ratio pulled to γ, the checkpoint
rule) and the scorecard's neurons section."""
import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from conceptlens.evaluation.neurons import neuron_goals, neurons_section, worse
from conceptlens.neurons import (EXCESSIVE, INSUFFICIENT, Counterfactuals, RepairSettings, SolverSettings, correlate,
                                 group_softmax, retaining_ratio, solve, solve_one_by_one, train_head, vote)
from conceptlens.neurons.repair import neuron_masks
from conceptlens.world import Scenario


def linear_head(weight, bias=None) -> nn.Linear:
    weight = torch.tensor(weight, dtype=torch.float32)
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else torch.tensor(bias, dtype=torch.float32))
    return head


def test_the_solver_flips_a_toy_mistake_with_the_smallest_shift():
    # class 1 wins iff f1 > f0: the row (1, 0.5, ...) is a mistake for class 1; the cheapest fix raises f1 and
    # lowers f0 by the same amount and leaves the neurons the head ignores (f2, f3) alone
    head = linear_head([[1, 0, 0, 0], [0, 1, 0, 0]])
    cf = solve(head, np.array([[1.0, 0.5, 0.0, 3.0]]), np.array([1]), SolverSettings(lr=0.05, max_steps=2000))
    assert cf.flipped.all()
    shift = cf.shift[0]
    assert shift[1] > 0 and shift[0] < 0 and shift[1] == pytest.approx(-shift[0], rel=1e-3)
    assert abs(shift[2]) < 1e-6 and abs(shift[3]) < 1e-6
    margin = 1.0 - 0.5  # the logit gap to close; the cheapest L1 shift has |w0| + |w1| just over it
    assert margin <= np.abs(shift).sum() <= margin * 1.5
    logits = head(torch.tensor([[1.0, 0.5, 0.0, 3.0]]) + torch.tensor(shift)).detach().numpy()[0]
    assert logits[1] > logits[0] and logits[1] - logits[0] < 0.2  # it stops as soon as it flips


def test_batched_equals_the_per_mistake_loop_and_records_the_never_flipped():
    rng = np.random.default_rng(0)
    head = linear_head(rng.normal(size=(4, 16)), rng.normal(size=4))
    features = np.abs(rng.normal(size=(12, 16))).astype(np.float32)
    targets = rng.integers(0, 4, 12)
    settings = SolverSettings(max_steps=60)
    batched, loop = solve(head, features, targets, settings), solve_one_by_one(head, features, targets, settings)
    np.testing.assert_allclose(batched.shift, loop.shift, atol=1e-5)
    assert (batched.steps == loop.steps).all() and (batched.flipped == loop.flipped).all()
    short = solve(head, features, targets, SolverSettings(max_steps=1))
    assert (~short.flipped).any() and short.steps.max() <= 1
    already = head(torch.tensor(features)).argmax(1).numpy() == targets
    assert (batched.steps[already] == 0).all() and batched.flipped[already].all()


def test_votes_count_top_positive_and_negative_shifts_above_the_share():
    shift = np.zeros((4, 8), np.float32)
    shift[:, 2] = 1.0  # every mistake needs more of neuron 2
    shift[:3, 5] = -1.0  # three of four need less of neuron 5
    shift[0, 6] = 0.5
    cf = Counterfactuals(shift, np.array([True, True, True, False]), np.zeros(4, np.int64))
    votes = vote(cf, np.array([0, 0, 0, 0]), top=2, min_share=0.4)
    assert votes.of(0, INSUFFICIENT).tolist() == [2]  # neuron 6: 1 of 3 flipped mistakes, under the share
    assert votes.of(0, EXCESSIVE).tolist() == [5]
    assert set(votes.never_flipped.tolist()) == {1} and set(votes.mistakes.tolist()) == {3}
    share = dict(zip(votes.neuron.tolist(), votes.share.tolist()))
    assert share[2] == 1.0 and share[5] == 1.0  # the never-flipped fourth row does not vote


def test_neurons_are_named_by_the_concept_they_follow_within_a_class():
    rng = np.random.default_rng(1)
    n = 600
    labels = rng.integers(0, 3, n)
    water = rng.random(n) < 0.3
    scores = np.column_stack([water + rng.normal(0, 0.3, n), rng.normal(size=n)])
    # neuron 0 follows water; neuron 1 only tells the classes apart (a plain correlation would name it)
    activations = np.column_stack([2.0 * water + rng.normal(0, 0.5, n), labels * 3.0 + rng.normal(0, 0.1, n)])
    scores[:, 1] += labels * 2.0  # a concept that varies with the class, not within it
    found = correlate(activations, scores, labels)
    names = ["background=water", "other"]
    assert [t["concept"] for t in found.top(0, names, 2, 0.05)] == ["background=water"]
    assert found.top(1, names, 2, 0.05) == []
    top = found.top(0, names, 1, 0.05)[0]
    assert top["low"] < top["r"] < top["high"] and top["q"] < 1e-6


def test_group_softmax_turns_each_group_into_a_distribution():
    out = group_softmax(np.array([[0.1, 0.2, 0.5]]), ["size=small", "size=large", "wet"], scale=10)
    assert out[0, :2].sum() == pytest.approx(1.0) and out[0, 1] > out[0, 0] and out[0, 2] == pytest.approx(0.5)


def spurious_features(n: int, rng, spurious_rate: float):
    """Class 1 has a core feature (0) and, at ``spurious_rate``, a spurious one (1) that class 0 lacks."""
    y = rng.integers(0, 2, n)
    core = y + rng.normal(0, 0.8, n)
    spur = (y == 1) & (rng.random(n) < spurious_rate)
    return np.column_stack([core, spur * 2.0, rng.normal(0, 1, n)]).astype(np.float32), y


def test_the_repair_changes_only_a_copy_and_pulls_the_retaining_ratio_to_gamma():
    rng = np.random.default_rng(2)
    f, y = spurious_features(2000, rng, 1.0)
    head = linear_head([[0, 0, 0], [1, 3, 0]], [0, -1.5])  # class 1 leans on the spurious neuron
    before = {k: v.clone() for k, v in head.state_dict().items()}
    masks = neuron_masks({1: [1]}, 2, 3)
    ratio = lambda h: retaining_ratio(h, torch.tensor(f), torch.tensor(y), masks, 1.0).item()  # noqa: E731
    fv, yv = spurious_features(500, rng, 0.0)  # validation: the slice without the shortcut
    done = train_head(head, (f, y), (fv, yv), neurons={1: [1]}, num_classes=2,
                      settings=RepairSettings(lam=5.0, epochs=30, lr=0.05))
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())  # the input head is untouched
    assert ratio(done.head) < ratio(head) / 2
    assert done.epoch > 0 and len(done.history) == 30
    best = max((h["val_accuracy"], h["val_worst_class"]) for h in done.history)
    chosen = done.history[done.epoch - 1]
    assert (chosen["val_accuracy"], chosen["val_worst_class"]) == best


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown repair loss"):
        train_head(linear_head([[1.0]]), (np.ones((2, 1)), np.zeros(2)), (np.ones((2, 1)), np.zeros(2)),
                   neurons={}, num_classes=1, settings=RepairSettings(loss="hinge"))


def test_worse_is_a_one_sided_exact_mcnemar_test():
    before = np.array([True] * 20)
    assert worse(before, before) == 1.0
    assert worse(before, np.array([False] * 8 + [True] * 12)) < 0.01
    assert worse(~before, before) == 1.0  # better is never worse


def test_the_neurons_section_scores_naming_and_repair_against_the_truth():
    rng = np.random.default_rng(3)
    n = 400
    labels = rng.integers(0, 2, n)
    water = rng.random(n) < 0.5
    activations = np.column_stack([water * 2.0 + rng.normal(0, 0.3, n), water * 1.0 + rng.normal(0, 0.5, n)])
    present = np.column_stack([water, ~water])
    scenario = np.where((labels == 1) & ~water, "star_on_water", None).astype(object)
    neurons = pa.table({"class": ["star", "star"], "neuron": [0, 1], "direction": [INSUFFICIENT, INSUFFICIENT],
                        "share": [0.9, 0.5], "concepts": [["background=water"], ["background=grass"]]})
    base = np.where(scenario == "star_on_water", 0, labels)  # the slice is all wrong before
    predictions = pa.table({"id": np.arange(n).astype(str), "label_index": labels, "base": base, "retain": labels})
    planted = [Scenario("star_on_water", "spurious_correlation", ("star",), "background=water", 1.0)]
    section = neurons_section(neurons, predictions, activations, present, scenario,
                              ["background=water", "background=grass"], planted, "retain")
    spur = section["naming"]["spurious"]["star_on_water.star"]
    assert spur["first"] and spur["neurons"][0]["truth"] == "background=water" and spur["neurons"][0]["truth_r"] > 0.8
    assert section["naming"]["agreement"] == 0.5  # neuron 1 follows water too, but was named grass
    repaired = section["repair"]["retain"]["slices"]["star_on_water"]
    assert repaired["before"] == 0.0 and repaired["after"] == 1.0 and repaired["worse_p"] == 1.0
    goals = neuron_goals(section)
    assert goals["neuron_named.star_on_water.star"]["met"] and goals["head_retraining.star_on_water"]["met"]
    hurt = pa.table({"id": predictions["id"], "label_index": labels, "base": labels, "retain": 1 - labels})
    section = neurons_section(neurons, hurt, activations, present, scenario, ["background=water", "background=grass"],
                              planted, "retain")
    assert not neuron_goals(section)["head_retraining.star_on_water"]["met"]


def test_the_edit_is_measured_against_plain_cross_entropy_on_the_same_rows():
    """The same slice lift from the edit and from plain cross-entropy: head retraining is met, but the edit does
    not beat cross-entropy (McNemar on the same rows: no discordant row); an edit that fixes 30 more slice rows
    than cross-entropy does."""
    n = 200
    labels = np.arange(n) % 2
    scenario = np.where(np.arange(n) < 60, "star_on_water", None).astype(object)
    base = np.where(scenario == "star_on_water", 1 - labels, labels)
    planted = [Scenario("star_on_water", "spurious_correlation", ("star",), "background=water", 1.0)]
    neurons = pa.table({"class": ["star"], "neuron": [0], "direction": [INSUFFICIENT], "share": [0.9],
                        "concepts": [["background=water"]]})
    activations, present = np.random.default_rng(0).normal(size=(n, 1)), np.ones((n, 1), bool)
    same = pa.table({"id": np.arange(n).astype(str), "label_index": labels, "base": base, "retain": labels,
                     "ce": labels})
    goals = neuron_goals(neurons_section(neurons, same, activations, present, scenario, ["background=water"],
                                         planted, "retain"))
    assert goals["head_retraining.star_on_water"]["met"]
    tie = goals["repair_beats_ce.star_on_water"]
    assert tie["value"] == 0 and not tie["met"] and tie["p"] == 1.0
    ce_half = np.where(np.arange(n) < 30, base, labels)  # cross-entropy fixes only half of the slice
    better = pa.table({"id": same["id"], "label_index": labels, "base": base, "retain": labels, "ce": ce_half})
    section = neurons_section(neurons, better, activations, present, scenario, ["background=water"], planted, "retain")
    beat = neuron_goals(section)["repair_beats_ce.star_on_water"]
    assert beat["value"] == pytest.approx(0.5) and beat["met"] and beat["interval"][0] > 0
    assert section["repair"]["retain"]["overall"]["vs_ce"]["b_only"] == 30
    assert "vs_ce" not in section["repair"]["ce"]["overall"]  # cross-entropy is not compared with itself
