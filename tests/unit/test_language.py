"""Method 4 (LBEE) on hand-made inputs: sentence banks from a tiny vocabulary (counted by hand), negations embedded
by reflection, the four methods' scores on similarity matrices whose answer is known, retrieval and validation of
sentences, the paper's metrics as exact fractions, and describe_clusters end to end on a planted failure."""
import hashlib

import numpy as np
import pytest
from scipy import stats

from conceptlens.language.bank import Group, Vocabulary, build_bank, embed_bank
from conceptlens.language.describe import Rows, Settings, describe_clusters, pick_rows, universe
from conceptlens.language.methods import (Contrast, candidate_objects, easy_weights, fpdiff, lifts,
                                          near_easy_clusters, pdiff, ranked, setdiff, term_gains, tops)
from conceptlens.language.validate import Retrieval, lbee_metrics, reference_set, retrieve, validate
from conceptlens.world.vocabulary import CLASSES

TINY_YAML = """\
prefix: a photo of
generic: object
groups:
  size: {kind: adjective, values: {small: small, large: large}}
  background: {kind: context, values: {grass: on grass, water: on water, sand: on sand}}
distractors:
  time: {kind: context, values: {night: at night}}
"""
# Per object, by hand: 1 alone + 6 singles (2 size, 3 background, 1 time) + 3 negations (background only:
# size has two values, time is a distractor) + pairs of two groups with at most one negation:
# size × background (2 × 6) + size × time (2 × 1) + background × time (6 × 1) = 20  ->  30 per object.
PER_OBJECT = 1 + 6 + 3 + (2 * 6 + 2 * 1 + 6 * 1)


def tiny_vocab(pairs: bool = True) -> Vocabulary:
    """The vocabulary of TINY_YAML, built directly."""
    return Vocabulary((Group("size", "adjective", {"small": "small", "large": "large"}),
                       Group("background", "context", {"grass": "on grass", "water": "on water", "sand": "on sand"}),
                       Group("time", "context", {"night": "at night"}, distractor=True)), pairs=pairs)


def tiny_bank():
    return build_bank(tiny_vocab(), ["star", "heart"])


def at(bank, text: str) -> int:
    assert bank.texts.count(text) == 1, text
    return bank.texts.index(text)


# ---------------------------------------------------------------------------------------------------- banks


def test_bank_from_a_user_vocabulary_counted_by_hand(tmp_path):
    """30 sentences per object (star, heart, generic), their texts, term ids, distractor flags, parents, base."""
    path = tmp_path / "bank.yaml"
    path.write_text(TINY_YAML)
    vocab = Vocabulary.load(path)
    assert [g.name for g in vocab.groups] == ["size", "background", "time"]
    assert [g.distractor for g in vocab.groups] == [False, False, True]
    bank = build_bank(vocab, ["star", "heart"])
    assert PER_OBJECT == 30 and len(bank) == 3 * 30
    assert bank.objects.count("star") == bank.objects.count("heart") == bank.objects.count(None) == 30

    alone, pair = at(bank, "a photo of a star"), at(bank, "a photo of a small star on water")
    small, water = at(bank, "a photo of a small star"), at(bank, "a photo of a star on water")
    negation = at(bank, "a photo of a star not on water")
    night = at(bank, "a photo of an object at night")
    assert at(bank, "a photo of a heart") == 30 and at(bank, "a photo of an object") == 60  # "an" before a vowel
    assert bank.terms[alone] == () and bank.terms[negation] == ("background!=water",)
    assert set(bank.terms[pair]) == {"size=small", "background=water"}
    assert bank.terms[night] == ("time=night",) and bank.objects[night] is None
    assert bank.distractor[night] and not bank.distractor[negation] and not bank.distractor[pair]
    assert bank.distractor[at(bank, "a photo of a large heart at night")]
    assert int(bank.distractor.sum()) == 3 * (1 + 2 + 6)  # every sentence naming night, per object

    assert sorted(bank.parents[pair]) == sorted([small, water])
    assert bank.parents[water] == (alone,) and bank.parents[alone] == ()
    assert bank.base[pair] == bank.base[negation] == alone == 0 and bank.base[night] == 60
    assert bank.base.tolist() == [0] * 30 + [30] * 30 + [60] * 30
    assert (negation, alone, water) in bank.negations
    assert (at(bank, "a photo of a small star not on water"), small, pair) in bank.negations
    assert len(bank.negations) == 3 * (3 + 2 * 3 + 1 * 3)  # per object: 3 alone, with size, with night

    # a two-valued group is not negated ("not small" is "large"), a distractor is never negated
    assert not any("size!=" in t or "time!=" in t for ts in bank.terms for t in ts)
    assert not any("not small" in t or "not large" in t or "not at night" in t for t in bank.texts)


def test_a_bank_without_pairs(tmp_path):
    """``pairs: false``: the object alone, singles and negations only."""
    path = tmp_path / "bank.yaml"
    path.write_text(TINY_YAML + "pairs: false\n")
    bank = build_bank(Vocabulary.load(path), ["star"])
    assert len(bank) == 2 * (1 + 6 + 3)
    assert max(len(t) for t in bank.terms) == 1
    assert "a photo of a small star on water" not in bank.texts


@pytest.mark.parametrize("text, key", [
    (TINY_YAML + "colour: red\n", "colour"),
    (TINY_YAML.replace("size: {kind: adjective", "size: {kind: noun"), "groups.size"),
    (TINY_YAML.replace("time: {kind: context, values: {night: at night}}", "time: {kind: context}"), "distractors.time"),
    (TINY_YAML + "negation: {context: not}\n", "negation.context"),
    (TINY_YAML + "negation: {verb: 'not {}'}\n", "negation.verb"),
    (TINY_YAML + "groups2: {}\n", "groups2"),
])
def test_vocabulary_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "bank.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        Vocabulary.load(path)


def test_vocabulary_missing_file_and_the_bundled_bank(tmp_path):
    """A missing file is FileNotFoundError; the bundled bank loads and no object repeats a sentence."""
    with pytest.raises(FileNotFoundError):
        Vocabulary.load(tmp_path / "nope.yaml")
    vocab = Vocabulary.load(None)
    assert {g.name for g in vocab.groups if g.distractor} == {"time", "quality", "place", "overlay"}
    bank = build_bank(vocab, CLASSES)
    for obj in [*CLASSES, None]:
        texts = [t for t, o in zip(bank.texts, bank.objects) if o == obj]
        assert len(texts) == len(set(texts)) == len(bank) // (len(CLASSES) + 1), obj
    assert "a photo of a star not on water" in bank.texts


def fake_unit(text: str, dim: int = 8) -> np.ndarray:
    """A deterministic random unit vector per text."""
    v = np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)).normal(size=dim)
    return v / np.linalg.norm(v)


def test_embed_bank_reflects_negations_without_encoding_them():
    bank = tiny_bank()
    calls = []

    def encode(texts):
        calls.extend(texts)
        return np.stack([fake_unit(t) for t in texts]).astype(np.float32)

    emb = embed_bank(bank, encode, batch_size=7)
    negated = {bank.texts[s] for s, _, _ in bank.negations}
    assert len(negated) == 36 and not negated & set(calls)
    assert set(calls) == set(bank.texts) - negated
    assert emb.shape == (len(bank), 8) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)

    def reflected(parent, positive):
        v = 2 * fake_unit(parent) - fake_unit(positive)
        return v / np.linalg.norm(v)

    assert np.allclose(emb[at(bank, "a photo of a star not on water")],
                       reflected("a photo of a star", "a photo of a star on water"), atol=1e-5)
    assert np.allclose(emb[at(bank, "a photo of a small heart not on sand")],
                       reflected("a photo of a small heart", "a photo of a small heart on sand"), atol=1e-5)
    assert np.allclose(emb[at(bank, "a photo of an object not on grass at night")],
                       reflected("a photo of an object at night", "a photo of an object on grass at night"), atol=1e-5)
    for s, parent, positive in bank.negations:
        assert "not" not in bank.texts[parent] and "not" not in bank.texts[positive]
        assert np.allclose(emb[s], reflected(bank.texts[parent], bank.texts[positive]), atol=1e-5)
    plain = bank.plain()
    assert np.allclose(emb[plain], np.stack([fake_unit(bank.texts[i]) for i in plain]), atol=1e-6)


# ---------------------------------------------------------------------------------------------------- methods


def grid(bank, offsets):
    """Rows ``offset + pattern``: every sentence's similarity relative to its object alone is the same on every
    row, exactly (dyadic numbers)."""
    pattern = (np.arange(len(bank)) % 8) / 16
    return np.asarray(offsets, np.float64)[:, None] + pattern[None, :]


def test_tops_and_setdiff():
    hard = np.array([[0.1, 0.4, 0.2], [0.3, 0.0, 0.5], [0.2, 0.2, 0.2]])
    c = Contrast(hard, np.zeros((1, 3)), np.ones(1))
    assert np.allclose(tops(c), [0.2, 0.2, 0.3])
    s = setdiff(c, np.array([False, True, False]))
    assert s[1] == -np.inf and np.allclose(s[[0, 2]], [0.2, 0.3])


def test_pdiff_is_the_standardised_difference_of_relative_similarities():
    """Hard rows sit far above the easy ones on every sentence (the object), but only "a star on sand" moves
    relative to "a star": hard +0.3, +0.5; easy 0, 0.1, 0.2 weighted 1/2, 1/4, 1/4."""
    bank = tiny_bank()
    sand = at(bank, "a photo of a star on sand")
    hard, easy = grid(bank, [0.5, 0.25]), grid(bank, [-0.25, 0.0, 0.125])
    hard[:, sand] += [0.3, 0.5]
    easy[:, sand] += [0.0, 0.1, 0.2]
    d = pdiff(Contrast(hard, easy, np.array([0.5, 0.25, 0.25])), bank)
    mean_h, var_h = 0.4, (0.1 ** 2 + 0.1 ** 2) / 2
    mean_e = 0.25 * 0.1 + 0.25 * 0.2
    var_e = 0.5 * 0.075 ** 2 + 0.25 * 0.025 ** 2 + 0.25 * 0.125 ** 2
    assert d[sand] == pytest.approx((mean_h - mean_e) / np.sqrt((var_h + var_e) / 2))
    assert d[sand] == pytest.approx(0.325 / np.sqrt(0.0084375))
    assert np.all(d[np.unique(bank.base)] == 0)
    assert np.count_nonzero(d) == 1  # the raw offsets (hard far above easy) add nothing


def test_easy_weights_give_each_class_its_hard_share():
    w = easy_weights(np.array(["star", "star", "star", "heart"]),
                     np.array(["star", "heart", "star", "heart", "heart", "circle"]))
    assert np.allclose(w, [0.375, 1 / 12, 0.375, 1 / 12, 1 / 12, 0])
    assert w.sum() == pytest.approx(1)
    assert w[[0, 2]].sum() == pytest.approx(0.75) and w[[1, 3, 4]].sum() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="circle"):
        easy_weights(np.array(["star", "circle"]), np.array(["star", "heart"]))


def test_candidate_objects():
    labels = ["star"] * 6 + ["heart"] * 3 + ["circle"]
    assert candidate_objects(labels, 0.2, 0.5) == {"star", "heart"}
    assert candidate_objects(labels, 0.3, 0.5) == {"star", "heart"}  # 3/10 is enough (>=)
    assert candidate_objects(labels, 0.5, 0.5) == {"star"}
    assert candidate_objects(labels, 0.2, 0.7) == {"star", "heart", None}  # no class holds 70 %
    assert candidate_objects(["star", "heart"], 0.6, 0.6) == {None}


def test_term_gains_are_welch_t_of_the_gain_over_each_parent():
    """Uniform weights; "a star on grass" gains 0.3, 0.1, 0.2 (hard) and 0, 0.1, -0.1, 0.05 (easy) over "a star":
    with uniform weights the statistic is Welch's t (scipy's, computed here)."""
    bank = tiny_bank()
    grass = at(bank, "a photo of a star on grass")
    pair = at(bank, "a photo of a small star on grass")
    hard, easy = grid(bank, [0.5, 0.25, 0.75]), grid(bank, [0.0, 0.125, -0.125, 0.25])
    hard[:, grass] += [0.3, 0.1, 0.2]
    easy[:, grass] += [0.0, 0.1, -0.1, 0.05]
    g = term_gains(Contrast(hard, easy, np.full(4, 0.25)), bank)
    from scipy import stats

    t = stats.ttest_ind([0.3, 0.1, 0.2], [0.0, 0.1, -0.1, 0.05], equal_var=False).statistic
    assert g[grass] == pytest.approx(t) and t == pytest.approx(2.611, abs=1e-3)
    assert g[pair] == pytest.approx(-t)  # the smallest over its parents: against "a star on grass"
    assert np.all(np.isinf(g[np.unique(bank.base)])) and np.all(g[np.unique(bank.base)] > 0)
    assert np.isinf(g).sum() == 3
    others = np.setdiff1d(np.arange(len(bank)), [grass, pair, *np.unique(bank.base)])
    grass_children = [i for i in others if grass in bank.parents[i]]
    assert len(grass_children) == 2  # large star on grass, star on grass at night (small: `pair` above)
    assert np.all(g[grass_children] == pytest.approx(-t))
    assert np.all(g[np.setdiff1d(others, grass_children)] == 0)  # no separation (zero spread): t = 0


def fpdiff_case():
    """Four hard and four easy star rows (uniform weights); relative to the object alone:

    * "a star on sand": hard 1, 1.25, 0.75, 1; easy 0, 0.25, -0.25, 0 (PDiff 1 / sqrt(1/32));
    * "a heart on sand": the same (a class the cluster does not hold);
    * "a star on grass": hard 0.5, 0, 0.5, 0; easy 0, 0.25, 0, 0.25 (PDiff 0.63 but Welch t 0.80);
    * "a small star on sand": "a star on sand" plus 0.01, 0.02, 0.01, 0.02 (hard) and 0, 0.005, 0, 0.005
      (easy): the word "small" separates (t ≈ 4) but lifts PDiff by less than nothing."""
    bank = tiny_bank()
    idx = {k: at(bank, f"a photo of a {k}") for k in ("star on sand", "heart on sand", "star on grass",
                                                       "small star on sand")}
    hard, easy = grid(bank, [0.5, 0.25, 0.75, 0.5]), grid(bank, [0.0, 0.125, -0.125, 0.25])
    for col in ("star on sand", "heart on sand", "small star on sand"):
        hard[:, idx[col]] += [1.0, 1.25, 0.75, 1.0]
        easy[:, idx[col]] += [0.0, 0.25, -0.25, 0.0]
    hard[:, idx["star on grass"]] += [0.5, 0.0, 0.5, 0.0]
    easy[:, idx["star on grass"]] += [0.0, 0.25, 0.0, 0.25]
    hard[:, idx["small star on sand"]] += [0.01, 0.02, 0.01, 0.02]
    easy[:, idx["small star on sand"]] += [0.0, 0.005, 0.0, 0.005]
    return bank, idx, Contrast(hard, easy, np.full(4, 0.25))


def test_fpdiff_filters_names_gains_and_lifts():
    bank, idx, c = fpdiff_case()
    d, g, lift = pdiff(c, bank), term_gains(c, bank), lifts(pdiff(c, bank), bank)
    # the preconditions of each exclusion below
    assert d[idx["star on sand"]] == pytest.approx(1 / np.sqrt(1 / 32))
    assert d[idx["star on grass"]] == pytest.approx(0.125 / np.sqrt((1 / 16 + 1 / 64) / 2))
    assert g[idx["star on grass"]] == pytest.approx(0.125 / np.sqrt((1 / 12) / 4 + (1 / 48) / 4))  # Welch, ddof=1
    assert g[idx["small star on sand"]] > 3 and lift[idx["small star on sand"]] < 0
    assert lift[idx["star on sand"]] == pytest.approx(d[idx["star on sand"]])  # the object alone counts 0

    f = fpdiff(c, bank, {"star"}, min_gain=2.0, min_lift=0.1)
    assert f[idx["star on sand"]] == pytest.approx(d[idx["star on sand"]])
    assert f[idx["heart on sand"]] == -np.inf  # names a class the cluster does not hold
    assert f[idx["star on grass"]] == -np.inf  # t 0.80 < 2
    assert f[idx["small star on sand"]] == -np.inf  # lift < 0.1
    assert {int(i) for i in np.flatnonzero(np.isfinite(f))} == {idx["star on sand"]}  # the object alone names nothing
    assert np.all(np.isneginf(f[[i for i, o in enumerate(bank.objects) if o != "star"]]))

    # each filter alone is what excluded its sentence
    assert np.isfinite(fpdiff(c, bank, {"star", "heart"}, 2.0, 0.1)[idx["heart on sand"]])
    assert fpdiff(c, bank, {"star"}, -np.inf, 0.1)[idx["star on grass"]] == pytest.approx(d[idx["star on grass"]])
    assert np.isfinite(fpdiff(c, bank, {"star"}, 2.0, -np.inf)[idx["small star on sand"]])
    # a given PDiff is used as is
    fake = np.zeros(len(bank))
    fake[idx["star on sand"]] = 0.05  # lift 0.05 < 0.1
    assert fpdiff(c, bank, {"star"}, 2.0, 0.1, pdiff_scores=fake)[idx["star on sand"]] == -np.inf


def test_ranked_best_first_ties_by_index():
    scores = np.array([0.5, -np.inf, 0.9, 0.5, np.nan, 0.1, 0.5])
    assert ranked(scores, 3).tolist() == [2, 0, 3]
    assert ranked(scores, 10).tolist() == [2, 0, 3, 6, 5]
    assert ranked(np.full(3, -np.inf), 2).tolist() == []


def unit(*v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def test_near_easy_clusters_marks_each_centroids_top():
    """Easy rows in two tight symmetric groups around e1 and e2 (centroids e1, e2): the top 2 sentences of each."""
    easy = np.stack([unit(1, d, 0) for d in (-0.05, 0, 0.05)] + [unit(d, 1, 0) for d in (-0.05, 0, 0.05)])
    sentences = np.stack([unit(1, 0, 0), unit(1, 0, 0.1), unit(0, 0, 1), unit(0, 1, 0), unit(0, 1, 0.2),
                          unit(-1, 0, 0)])
    assert near_easy_clusters(easy, sentences, k=2, top=2).tolist() == [True, True, False, True, True, False]
    assert near_easy_clusters(easy, sentences, k=2, top=1).tolist() == [True, False, False, True, False, False]
    # k above the rows: one cluster per row
    two = np.stack([unit(1, 0, 0), unit(0, 0, 1)])
    assert near_easy_clusters(two, sentences, k=5, top=1).tolist() == [True, False, True, False, False, False]
    ties = np.stack([unit(1, 0, 0), unit(1, 0, 0), unit(0, 1, 0)])
    assert near_easy_clusters(unit(1, 0, 0)[None], ties, k=1, top=1).tolist() == [True, False, False]  # ties: first


# ---------------------------------------------------------------------------------------------------- validation


def retrieval_case():
    """Rows 0-3 star, 4-7 heart; wrong: rows 1, 3, 4."""
    bank = tiny_bank()
    sims = np.zeros((8, len(bank)))
    idx = {k: at(bank, f"a photo of {k}") for k in ("a star", "a star on sand", "a heart on sand", "an object on sand")}
    sims[:4, idx["a star"]] = [0.9, 0.1, 0.5, 0.3]
    sims[4:, idx["a star"]] = 0.2
    sims[:4, idx["a star on sand"]] = [0.95, 0.6, 0.55, 0.7]  # relative 0.05, 0.5, 0.05, 0.4: rows 1, 3
    sims[4:, idx["a star on sand"]] = 5.0  # heart rows: out of scope however similar
    sims[:4, idx["a heart on sand"]] = 5.0
    sims[4:, idx["a heart on sand"]] = [0.1, 0.2, 0.3, 0.4]
    sims[:, idx["an object on sand"]] = [0.1, 0.9, 0.2, 0.8, 0.7, 0.6, 0.0, 0.05]
    wrong = np.array([0, 1, 0, 1, 1, 0, 0, 0], bool)
    classes = np.array(["star"] * 4 + ["heart"] * 4, object)
    return bank, idx, sims, wrong, classes


def test_retrieve_within_each_sentence_scope():
    bank, idx, sims, wrong, classes = retrieval_case()
    r = retrieve(sims, wrong, classes, bank, 0.5)
    assert len(r.retrieved) == len(bank)

    def stats_of(s):
        return r.retrieved[s], r.errors[s], r.rest[s], r.rest_errors[s]

    assert stats_of(idx["a star on sand"]) == (2, 2, 2, 0)  # by relative similarity: rows 1, 3 (plain: 0, 3)
    assert stats_of(idx["a star"]) == (2, 0, 2, 2)  # the object alone by its plain similarity: rows 0, 2
    assert stats_of(idx["a heart on sand"]) == (2, 0, 2, 1)  # rows 6, 7 among the hearts
    assert stats_of(idx["an object on sand"]) == (4, 3, 4, 0)  # all rows: 1, 3, 4, 5
    assert r.rate[idx["a star on sand"]] == 1.0 and r.rest_rate[idx["a star"]] == 1.0
    assert r.scope_rate[idx["an object on sand"]] == pytest.approx(3 / 8)

    few = retrieve(sims, wrong, classes, bank, 0.25, sentences=np.array([idx["an object on sand"], idx["a star on sand"]]))
    assert few.retrieved.tolist() == [2, 1] and few.errors.tolist() == [2, 1]  # k = 2 of 8; max(1, round(1.0))
    assert few.rest.tolist() == [6, 3] and few.rest_errors.tolist() == [1, 1]
    tiny = retrieve(sims, wrong, classes, bank, 0.1, sentences=np.array([idx["a star on sand"]]))
    assert tiny.retrieved.tolist() == [1] and tiny.errors.tolist() == [1]  # round(0.4) = 0, at least 1


def bh(p):
    """Benjamini-Hochberg written out: q_i = min over j >= rank(i) of p_(j) m / j, NaN skipped."""
    p = np.asarray(p, float)
    ok = [i for i in range(len(p)) if np.isfinite(p[i])]
    order = sorted(ok, key=lambda i: p[i])
    m, q = len(ok), np.full(len(p), np.nan)
    for rank, i in enumerate(order, 1):
        q[i] = min(1.0, min(p[order[j - 1]] * m / j for j in range(rank, m + 1)))
    return q


def test_validate_with_fisher_bh_and_wilson():
    r = Retrieval(retrieved=np.array([10, 10, 0, 10, 20]), errors=np.array([10, 2, 0, 6, 6]),
                  rest=np.array([40, 40, 40, 40, 30]), rest_errors=np.array([0, 8, 5, 8, 9]))
    v = validate(r, alpha=0.05)
    p = [stats.fisher_exact([[e, n - e], [re, rn - re]], alternative="greater")[1] if n and rn else np.nan
         for e, n, re, rn in zip(r.errors, r.retrieved, r.rest_errors, r.rest)]
    assert np.allclose(v["p"], p, equal_nan=True) and np.isnan(v["p"][2])
    assert np.allclose(v["q"], bh(p), equal_nan=True)
    assert np.all(v["q"][[0, 1, 3, 4]] >= v["p"][[0, 1, 3, 4]])
    assert v["validated"].tolist() == [True, False, False, True, False]  # 1, 4: same rate as the rest; 2: empty
    assert v["q"][0] < 1e-6 and v["q"][1] > 0.5
    rate = np.array([1.0, 0.2, np.nan, 0.6, 0.3])
    ok = [0, 1, 3, 4]
    assert np.all(v["low"][ok] <= rate[ok]) and np.all(rate[ok] <= v["high"][ok]) and v["high"][0] == 1.0
    z, n, f = 1.959964, 10, 0.6
    centre, half = (f + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(f * (1 - f) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert v["low"][3] == pytest.approx(centre - half, abs=1e-5) and v["high"][3] == pytest.approx(centre + half, abs=1e-5)


def test_reference_set_and_lbee_metrics_by_hand():
    r = Retrieval(retrieved=np.array([5, 5, 5, 5]), errors=np.array([4, 1, 0, 2]),
                  rest=np.array([15, 15, 15, 15]), rest_errors=np.array([1, 3, 0, 2]))
    # rates 0.8, 0.2, 0, 0.4 against scope rates 0.25, 0.2, 0, 0.2 (beta 2: 0.5, 0.4, 0, 0.4)
    assert reference_set(r, 2.0).tolist() == [True, False, False, True]
    assert reference_set(r, 1.0).tolist() == [True, True, False, True]  # errors > 0 is needed (sentence 2)

    reference = np.array([1, 0, 1, 0, 1, 0, 0, 1], bool)  # S*: 0, 2, 4, 7
    within = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)  # S = S* ∩ U = {0, 2, 4}
    m = lbee_metrics([[0, 1], [3, 5], [2, 7]], reference, within)  # P = {0, 1, 2, 3, 5, 7}
    assert m["ahr"] == pytest.approx((1 / 2 + 0 + 2 / 2) / 3)  # 7 is a hit: AHR uses all of S*
    assert m["acr"] == pytest.approx(2 / 3)
    assert m["tpr"] == pytest.approx(2 / 3)  # P ∩ S = {0, 2}
    assert m["ji"] == pytest.approx(2 / 7)  # P ∪ S = {0, 1, 2, 3, 4, 5, 7}
    assert lbee_metrics([[], []], reference, within) == {"ahr": None, "acr": None, "tpr": None, "ji": None}
    none_relevant = lbee_metrics([[1, 3]], reference, np.zeros(8, bool))
    assert none_relevant["tpr"] is None and none_relevant["ji"] == 0 and none_relevant["ahr"] == 0


# ---------------------------------------------------------------------------------------------------- describe


def test_pick_rows_is_a_stable_share():
    ids = [f"img-{i:05d}" for i in range(2000)]
    half = pick_rows(ids, 0.5)
    assert half.dtype == bool and half.shape == (2000,)
    assert np.array_equal(half, pick_rows(list(ids), 0.5))
    assert abs(half.mean() - 0.5) < 0.05
    assert not pick_rows(ids, 0.0).any() and pick_rows(ids, 1.0).all()
    assert np.all(half[pick_rows(ids, 0.3)])  # a smaller share picks a subset
    assert np.array_equal(pick_rows(ids[::-1], 0.5), half[::-1])  # per id, not per position


def test_describe_clusters_names_the_planted_failure():
    """Cluster 0: 8 picking star rows (and 4 validating ones) 0.3 closer to "a star on sand" than the easy stars;
    cluster 1: 6 heart rows, 3 of them picking: fewer than min_cluster, skipped."""
    bank = tiny_bank()
    sand = at(bank, "a photo of a star on sand")
    rng = np.random.default_rng(0)
    groups = [  # (class, wrong, cluster, pick, rows)
        ("star", True, 0, True, 8), ("star", True, 0, False, 4), ("star", False, -1, True, 12),
        ("star", False, -1, False, 5), ("heart", True, 1, True, 3), ("heart", True, 1, False, 3),
        ("heart", False, -1, True, 10)]
    cols = [np.repeat(np.array([g[i] for g in groups], object), [g[4] for g in groups]) for i in range(4)]
    classes, wrong, cluster, pick = cols[0], cols[1].astype(bool), cols[2].astype(int), cols[3].astype(bool)
    n = len(classes)
    sims = 0.2 + rng.uniform(0, 0.1, (n, 1)) + rng.normal(0, 0.02, (n, len(bank)))
    sims[cluster == 0, sand] += 0.3
    sims[cluster == 1, at(bank, "a photo of a heart at night")] += 0.3
    rows = Rows(sims.astype(np.float32), classes, wrong, cluster, pick)
    out = describe_clusters(rows, bank, np.zeros(len(bank), bool), Settings(min_cluster=5, depth=5))
    assert [d.cluster for d in out] == [0]
    d = out[0]
    assert d.rows == 8 and d.allowed == {"star"}
    assert np.allclose(d.similarity, sims[(cluster == 0) & pick].mean(0), atol=1e-5)
    assert d.ranked["fpdiff"][0] == sand and d.ranked["pdiff"][0] == sand
    assert d.scores["fpdiff"][0] > 5 and np.all(np.diff(d.scores["fpdiff"]) <= 0)
    assert all(bank.objects[s] == "star" for s in d.ranked["fpdiff"])
    assert len(d.ranked["tops"]) == 5
    assert universe(bank, out).tolist() == [o == "star" for o in bank.objects]


def test_describe_clusters_easy_set_all_correct_rows():
    """A cluster of circles with no correct circle row: the class-mix easy set has nothing to contrast with, so the
    cluster is contrasted with every correct row, as ``easy="all"`` does, and says so; both find the sentence."""
    bank = build_bank(tiny_vocab(), ["circle", "star"])
    sand = at(bank, "a photo of a circle on sand")
    rng = np.random.default_rng(1)
    classes = np.array(["circle"] * 6 + ["star"] * 10, object)
    wrong = np.array([True] * 6 + [False] * 10)
    cluster = np.array([0] * 6 + [-1] * 10)
    sims = 0.2 + rng.normal(0, 0.02, (16, len(bank)))
    sims[:6, sand] += 0.3
    rows = Rows(sims, classes, wrong, cluster, np.ones(16, bool))
    fallback = describe_clusters(rows, bank, np.zeros(len(bank), bool), Settings(min_cluster=5))
    out = describe_clusters(rows, bank, np.zeros(len(bank), bool), Settings(min_cluster=5, easy="all"))
    assert len(out) == 1 and out[0].rows == 6 and out[0].allowed == {"circle"}
    assert out[0].ranked["fpdiff"][0] == sand and out[0].contrast_missing == []
    assert fallback[0].contrast_missing == ["circle"]  # the class mix had nothing to contrast with: all correct rows
    assert all(np.array_equal(fallback[0].ranked[m], out[0].ranked[m]) for m in out[0].ranked)
