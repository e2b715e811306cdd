"""The runtime filter: flags inputs likely misclassified or adversarial, and says why in concepts.

For an input predicted as class ``ŷ`` it compares the input's single-input heatmap (z-scored
concept scores of the aligned encoder features) with reference heatmaps of ``ŷ``'s correct,
misclassified and adversarial calibration inputs (METHODS.md §1, runtime analysis), and adds
what makes the comparison sharper:

* ``msp`` and ``energy``: the classifier's confidence (Hendrycks & Gimpel 2017; Liu et al. 2020);
* ``vlm_margin`` / ``aligned_margin``: how far the VLM's own embedding and the aligned encoder
  features prefer ``ŷ``'s class prompt over the next class (an attack on the classifier does not
  move the VLM, so the two disagree);
* ``consistency``: cosine between the aligned and the VLM concept heatmaps of the input, and
  ``agreement``: cosine between the aligned features and the VLM embedding themselves;
* ``mahalanobis``: the distance of the encoder features from the nearest class (Lee et al. 2018).

Two logistic heads over these signals (fitted on ``calib``) score "misclassified" and
"adversarial"; thresholds are set for a target false-alarm rate on correct clean inputs. Without
adversarial calibration rows the filter has the misclassification head only (``heads`` says which). The
filter follows the Detector contract: ``fit`` on calibration batches, ``score`` higher = worse.
Everything is NumPy and is saved as one ``.npz`` + ``.json`` bundle.

**Where the concept signals come from** (``concepts_from``, carried in the bundle): ``vlm`` reads both the
aligned encoder features and the VLM's own image embedding (all of ``SIGNALS``), so serving runs the VLM's
image tower on every input; ``aligned`` reads only the classifier's encoder features mapped through the aligner
``A(z)`` into the VLM's image space, so serving runs the classifier alone: the signals that need the VLM's
image embedding (:data:`VLM_SIGNALS`) are left out and the heads weigh the others. Calibration needs the VLM
embedding in both modes (the aligner and the z-score statistics are fitted on it).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from conceptlens.runtime.detectors import Mahalanobis, energy_score, mahalanobis_score, msp_score, threshold_at_fpr
from conceptlens.semantic import Aligner, AlignerFit, source_embeddings, stack, unit

SIGNALS = ("msp", "energy", "vlm_margin", "aligned_margin", "consistency", "agreement", "mahalanobis",
           "cos_correct", "cos_incorrect", "cos_adversarial")
VLM_SIGNALS = ("vlm_margin", "consistency", "agreement")  # the signals that read the VLM's image embedding
CONCEPT_SIGNALS = ("consistency", "cos_correct", "cos_incorrect", "cos_adversarial")  # read concept heatmaps
CONCEPT_SOURCES = ("aligned", "vlm")  # concepts_from: A(z) alone, or A(z) and the VLM's image embedding
REFERENCES = ("correct", "incorrect", "adversarial")
HEADS = ("misclassified", "adversarial")
VERDICTS = ("accept", "likely-misclassified", "likely-adversarial")


def _margin(sim: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``sim[ŷ]`` minus the best other class, per row."""
    rows = np.arange(len(sim))
    own = sim[rows, predicted]
    other = sim.copy()
    other[rows, predicted] = -np.inf
    return own - other.max(1)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (unit(a) * unit(b)).sum(1)


def signal_names(concepts_from: str) -> tuple[str, ...]:
    """The signals a filter reads in mode ``concepts_from`` (one of :data:`CONCEPT_SOURCES`), in order."""
    if concepts_from not in CONCEPT_SOURCES:
        raise ValueError(f"concepts_from must be one of {CONCEPT_SOURCES}, not {concepts_from!r}")
    return SIGNALS if concepts_from == "vlm" else tuple(s for s in SIGNALS if s not in VLM_SIGNALS)


@dataclass
class ConceptFilter:
    """``aligner``; ``concepts`` ``(C, E)`` and ``classes`` ``(K, E)`` text embeddings; ``mean``/``std``
    ``(C,)`` z-score statistics per source (``aligned``, ``vlm``); ``concept_names``, ``class_names``;
    ``concepts_from``: ``vlm`` (today's signals, the VLM image embedding needed per input) or ``aligned``
    (encoder features through the aligner only)."""
    aligner: Aligner
    concepts: np.ndarray
    classes: np.ndarray
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    concept_names: list[str]
    class_names: list[str]
    references: dict[str, np.ndarray] | None = None  # kind -> (K, C) mean z-heatmap per predicted class
    heads: dict[str, dict[str, np.ndarray]] | None = None  # head -> coef, intercept, centre, scale
    gaussians: dict[str, np.ndarray] | None = None  # class means (K, D) and tied precision (D, D) of features
    thresholds: dict[str, float] | None = None
    fpr: float = 0.05
    unreliable: list[str] = field(default_factory=list)  # concepts the trust check did not back: never named
    concepts_from: str = "vlm"
    without: tuple[str, ...] = ()  # signals the heads leave out: an ablation to measure, never a bundle

    def __post_init__(self) -> None:
        self.concepts_from = str(getattr(self.concepts_from, "value", self.concepts_from))  # a config enum too
        signal_names(self.concepts_from)  # a ValueError for an unknown mode
        self.without = tuple(self.without)

    @property
    def signal_names(self) -> tuple[str, ...]:
        """The signals the heads weigh, in order (:func:`signal_names` of :attr:`concepts_from`, less :attr:`without`)."""
        return tuple(s for s in signal_names(self.concepts_from) if s not in self.without)

    @property
    def needs_vlm(self) -> bool:
        """Whether scoring reads ``vlm_embedding`` (the VLM's image tower must run per input)."""
        return self.concepts_from == "vlm"

    # --- per-input quantities -------------------------------------------------------------
    def heatmaps(self, batch: dict) -> dict[str, np.ndarray]:
        """Single-input heatmaps ``(N, C)`` (z-scores) from the aligned features and, when :attr:`needs_vlm`, from
        the VLM (``vlm_embedding`` is not read otherwise)."""
        emb = (source_embeddings(self.aligner, batch) if self.needs_vlm
               else {"aligned": unit(self.aligner(stack(batch["features"])))})
        return {s: (e @ self.concepts.T - self.mean[s]) / self.std[s] for s, e in emb.items()} | {
            f"{s}_class_sim": e @ self.classes.T for s, e in emb.items()} | (
            {"agreement": (emb["aligned"] * emb["vlm"]).sum(1)} if self.needs_vlm else {})

    def signals(self, batch: dict) -> np.ndarray:
        """``float64 (N, len(signal_names))``."""
        predicted = np.asarray(batch["prediction"], np.int64)
        h = self.heatmaps(batch)
        logits = stack(batch["logits"])
        columns = {"msp": -msp_score(logits), "energy": energy_score(logits),
                   "aligned_margin": _margin(h["aligned_class_sim"], predicted),
                   "mahalanobis": mahalanobis_score(stack(batch["features"]), self.gaussians["means"],
                                                    self.gaussians["precision"])}
        if self.needs_vlm:
            columns |= {"vlm_margin": _margin(h["vlm_class_sim"], predicted),
                        "consistency": _cos(h["aligned"], h["vlm"]), "agreement": h["agreement"]}
        for kind in REFERENCES:  # no adversarial reference: a constant 0, which a head gives no weight
            columns[f"cos_{kind}"] = (_cos(h["aligned"], self.references[kind][predicted]) if kind in self.references
                                      else np.zeros(len(predicted)))
        return np.stack([columns[name] for name in self.signal_names], 1).astype(np.float64)

    # --- fitting ------------------------------------------------------------------------------
    def fit(self, clean: dict, adversarial: dict | None = None, *, fpr: float = 0.05, ridge: float = 0.01,
            seed: int = 0) -> "ConceptFilter":
        """References, heads and thresholds from calibration batches of clean and adversarial rows
        (each with ``label_index``, ``prediction``, ``logits``, ``features``, ``vlm_embedding``; ``id`` /
        ``source_id`` name each row's source image and ``clean_prediction`` the prediction on it, when known).
        Without adversarial rows (``None`` or empty) only the misclassification head is fitted: no
        adversarial reference, head, threshold or verdict. An adversarial row counts as an attack only when it
        flips a correct prediction (:func:`successful_attacks`).

        Three disjoint folds by source image (:func:`folds`): the aligner, z-score statistics, references and
        class Gaussians come from the first, the heads from the second and the thresholds from the third, so
        neither heads nor thresholds see an image (or an attacked copy of it) that shaped what they read."""
        with_adversarial = adversarial is not None and len(adversarial["prediction"]) > 0
        fold = {"clean": folds(sources(clean), seed)} | (
            {"adv": folds(sources(adversarial), seed)} if with_adversarial else {})
        ref_clean = take(clean, fold["clean"] == 0)
        correct = ref_clean["prediction"] == ref_clean["label_index"]
        fit = AlignerFit()
        fit.update(stack(ref_clean["features"]), stack(ref_clean["vlm_embedding"]))
        self.aligner = fit.solve(ridge)
        raw = {source: e @ self.concepts.T for source, e in source_embeddings(self.aligner, ref_clean).items()}
        self.mean = {source: r.mean(0) for source, r in raw.items()}  # z-score statistics of this fold
        self.std = {source: r.std(0) + 1e-12 for source, r in raw.items()}
        gaussians = Mahalanobis().fit(take(ref_clean, correct))
        self.gaussians = {"means": gaussians.means, "precision": gaussians.precision}
        z_clean = self.heatmaps(ref_clean)["aligned"]
        self.references = {
            "correct": self._per_class(z_clean[correct], ref_clean["prediction"][correct]),
            "incorrect": self._per_class(z_clean[~correct], ref_clean["prediction"][~correct]),
        }
        if with_adversarial:
            ref_adv = take(adversarial, (fold["adv"] == 0) & successful_attacks(adversarial))
            self.references["adversarial"] = self._per_class(self.heatmaps(ref_adv)["aligned"], ref_adv["prediction"])
        head_clean = take(clean, fold["clean"] == 1)
        s_clean = self.signals(head_clean)
        self.heads = {"misclassified": _fit_head(s_clean, head_clean["prediction"] != head_clean["label_index"])}
        if with_adversarial:
            s_adv = self.signals(take(adversarial, (fold["adv"] == 1) & successful_attacks(adversarial)))
            self.heads["adversarial"] = _fit_head(np.concatenate([s_clean, s_adv]),
                                                  np.r_[np.zeros(len(s_clean), bool), np.ones(len(s_adv), bool)])
        held = take(clean, fold["clean"] == 2)
        scores = self.score_all(held)
        self.thresholds = joint_thresholds({h: v[held["prediction"] == held["label_index"]] for h, v in scores.items()},
                                           fpr)
        self.fpr = fpr
        return self

    def _per_class(self, z: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Mean z-heatmap per predicted class; classes without rows fall back to the overall mean."""
        out = np.tile(z.mean(0) if len(z) else np.zeros(z.shape[1]), (len(self.class_names), 1))
        for k in np.unique(predicted):
            out[k] = z[predicted == k].mean(0)
        return out

    # --- scoring ------------------------------------------------------------------------------
    @property
    def verdict_names(self) -> tuple[str, ...]:
        """The verdicts this filter gives: ``likely-adversarial`` only with an adversarial head."""
        return VERDICTS if "adversarial" in self.heads else VERDICTS[:2]

    def score_all(self, batch: dict) -> dict[str, np.ndarray]:
        """Each head's scores ``float64 (N,)`` in [0, 1], higher = more likely defective (keys: ``heads``)."""
        s = self.signals(batch)
        return {head: _apply_head(self.heads[head], s) for head in HEADS if head in self.heads}

    def score(self, batch: dict) -> np.ndarray:
        """Detector contract: the largest of the heads' scores relative to their thresholds."""
        scores = self.score_all(batch)
        return np.max([scores[head] - self.thresholds[head] for head in scores], axis=0)

    def verdicts(self, batch: dict, thresholds: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """``verdict`` (one of :attr:`verdict_names`) and each head's score; ``thresholds`` overrides the
        calibrated ones (a threshold for a head the filter lacks is ignored)."""
        t = self.thresholds | (thresholds or {})
        scores = self.score_all(batch)
        verdict = np.where(scores["misclassified"] > t["misclassified"], VERDICTS[1], VERDICTS[0])
        if "adversarial" in scores:
            verdict = np.where(scores["adversarial"] > t["adversarial"], VERDICTS[2], verdict)
        return {"verdict": verdict.astype(object)} | scores

    def explain(self, batch: dict, top: int = 3) -> list[list[dict]]:
        """Per input, the concepts furthest from what correct predictions of its class look like (among those
        the trust check backs: none when the VLM did not recognise the classes)."""
        predicted = np.asarray(batch["prediction"], np.int64)
        z = self.heatmaps(batch)["aligned"]
        typical = self.references["correct"][predicted]
        named = np.array([c not in self.unreliable for c in self.concept_names])
        out = []
        for i in range(len(z)):
            gap = z[i] - typical[i]
            order = [j for j in np.argsort(-np.abs(gap)) if named[j]][:top]
            out.append([{"concept": self.concept_names[j], "z": float(z[i, j]), "typical_z": float(typical[i, j]),
                         "text": f"{self.concept_names[j]} {'higher' if gap[j] > 0 else 'lower'} than in correct "
                                 f"'{self.class_names[predicted[i]]}' predictions ({z[i, j]:+.1f} vs "
                                 f"{typical[i, j]:+.1f} σ)"} for j in order])
        return out

    # --- bundle -------------------------------------------------------------------------------
    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        if self.without:
            raise ValueError(f"this filter leaves out {list(self.without)}: an ablation is measured, not deployed")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"W": self.aligner.W, "b": self.aligner.b, "concepts": self.concepts, "classes": self.classes}
        arrays |= {f"{s}_{stat}": getattr(self, stat)[s] for s in self.mean for stat in ("mean", "std")}
        arrays |= {f"ref_{k}": v for k, v in self.references.items()}
        arrays |= {f"gaussian_{k}": v for k, v in self.gaussians.items()}
        arrays |= {f"head_{h}_{k}": v for h, head in self.heads.items() for k, v in head.items()}
        np.savez(folder / "filter.npz", **arrays)
        info = {"concept_names": self.concept_names, "class_names": self.class_names,
                "concepts_from": self.concepts_from, "signals": list(self.signal_names),
                "heads": list(self.heads), "thresholds": self.thresholds, "fpr": self.fpr,
                "unreliable_concepts": list(self.unreliable),
                "aligner_r2": self.aligner.r2, "metadata": metadata or {}}
        (folder / "filter.json").write_text(json.dumps(info, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ConceptFilter":
        folder = Path(folder)
        if not (folder / "filter.json").is_file():
            raise FileNotFoundError(f"no filter bundle (filter.json, filter.npz) in {folder}")
        info = json.loads((folder / "filter.json").read_text())
        mode = info.get("concepts_from", "vlm")  # bundles made before the aligned mode are vlm bundles
        expected = list(signal_names(mode)) if mode in CONCEPT_SOURCES else None
        if info.get("signals") != expected:
            raise ValueError(f"the filter bundle in {folder} was made with concepts_from {mode!r} and signals "
                             f"{info.get('signals')}, this version reads {expected} in that mode: re-run "
                             f"`conceptlens monitor` to rebuild it")
        a = np.load(folder / "filter.npz")
        sources = ("aligned", "vlm")
        return cls(Aligner(a["W"], a["b"], info["aligner_r2"]), a["concepts"], a["classes"],
                   {s: a[f"{s}_mean"] for s in sources}, {s: a[f"{s}_std"] for s in sources},
                   info["concept_names"], info["class_names"],
                   references={k: a[f"ref_{k}"] for k in REFERENCES if f"ref_{k}" in a},
                   heads={h: {k: a[f"head_{h}_{k}"] for k in ("coef", "intercept", "centre", "scale")}
                          for h in info.get("heads", HEADS)},
                   gaussians={k: a[f"gaussian_{k}"] for k in ("means", "precision")},
                   thresholds=info["thresholds"], fpr=info["fpr"], unreliable=info.get("unreliable_concepts", []),
                   concepts_from=mode)


def sources(batch: dict) -> np.ndarray:
    """The source image of each row: ``source_id`` (an attacked copy), else ``id``, else the row itself."""
    for key in ("source_id", "id"):
        if key in batch:
            return np.asarray(batch[key]).astype(str)
    return np.char.add("row", np.arange(len(batch["prediction"])).astype(str))


def folds(groups: np.ndarray, seed: int = 0, k: int = 3) -> np.ndarray:
    """Fold ``0..k-1`` of each row from a seeded hash of its group (its source image): every row of one image,
    clean or attacked, lands in the same fold, whatever else is in the batch."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{g}".encode(), digest_size=8).digest(), "little") % k
                     for g in groups], np.int64)


def successful_attacks(adversarial: dict) -> np.ndarray:
    """``bool (N,)``: the adversarial rows that flipped a correct prediction (the source image classified right,
    the attacked copy wrong). Without ``clean_prediction`` every misclassified adversarial row counts."""
    fooled = np.asarray(adversarial["prediction"]) != np.asarray(adversarial["label_index"])
    if "clean_prediction" in adversarial:
        fooled &= np.asarray(adversarial["clean_prediction"]) == np.asarray(adversarial["label_index"])
    return fooled


def joint_thresholds(correct_scores: dict[str, np.ndarray], fpr: float) -> dict[str, float]:
    """One threshold per head, all at the same per-head rate, the largest rate at which flagging by any head
    stays within ``fpr`` of the correct rows (``correct_scores``: head -> scores of the same rows)."""
    heads = list(correct_scores)
    n = len(next(iter(correct_scores.values())))

    def at(rate: float) -> tuple[dict[str, float], float]:
        t = {h: threshold_at_fpr(correct_scores[h], rate) for h in heads}
        return t, float(np.any([correct_scores[h] > t[h] for h in heads], axis=0).mean())

    low, high = fpr / len(heads), fpr  # the union at rate fpr/H is at most fpr; at fpr at least fpr
    for _ in range(int(np.ceil(np.log2(max(n, 2)))) + 1):  # rates differ in effect only by 1/n
        middle = (low + high) / 2
        low, high = (middle, high) if at(middle)[1] <= fpr else (low, middle)
    return at(low)[0]


def take(batch: dict, mask: np.ndarray) -> dict:
    """The rows of a batch where ``mask`` is true."""
    return {k: np.asarray(v)[mask] for k, v in batch.items()}


def _fit_head(signals: np.ndarray, defective: np.ndarray) -> dict[str, np.ndarray]:
    if defective.all() or not defective.any():
        raise ValueError("a filter head needs both defective and good calibration rows")
    centre, scale = signals.mean(0), signals.std(0) + 1e-9
    model = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
    model.fit((signals - centre) / scale, defective)
    return {"coef": model.coef_[0], "intercept": model.intercept_, "centre": centre, "scale": scale}


def _apply_head(head: dict[str, np.ndarray], signals: np.ndarray) -> np.ndarray:
    logit = ((signals - head["centre"]) / head["scale"]) @ head["coef"] + head["intercept"][0]
    return 1 / (1 + np.exp(-logit))
