"""Known failure modes at serving time: which root-cause cluster a flagged input looks like.

``conceptlens rootcause`` clusters the classifier's held-out failures into root causes and ``conceptlens explain``
gives each cluster validated sentences. :class:`FailureModes` carries those clusters to the filter bundle, so
that an alert can say what the input looks like: "nearest failure mode: cluster 0, 0.7 radii away; looks like:
a photo of a small star not on water".

**Built from calib rows only.** Every centroid and radius comes from the ``calib`` failures of the heldout
set's chosen clusters (the rows the filter is calibrated on); test rows never contribute, so what an alert
says about a test input is measured on rows it has not seen. Noise rows (no cluster) are not a failure mode.

**Matching space.** The chosen pipeline's extractor when it is a table extractor (``vlm``: the VLM image
embedding; ``encoder``: the classifier's pooled features; ``concepts``: z-scored concept scores, with the
analysis' concept embeddings and statistics carried here). An image extractor (backbone, autoencoder,
relevance) reads the image again through models the bundle does not carry, so it is not computed at serving:
the object then matches in the ``vlm`` space and says so (``space`` differs from ``pipeline``'s extractor,
``note`` tells why). The features are centred and scaled to unit RMS norm as
:func:`conceptlens.rootcause.with_labels` does (statistics from the member rows), without the label block.

**Candidates.** At serving the true label is unknown, only the prediction: the candidates for an input
predicted as class ``p`` are the (cluster, ``p``) groups, the members of the cluster that the classifier
predicted as ``p``. A group needs ``min_members`` calib members to have a centroid and a radius; an input
whose predicted class has no group has no candidate (``cluster`` None).

**Distance, in radii.** ``distance`` is the Euclidean distance from the input to a group's centroid (in the
scaled space) divided by that group's *radius*: the conformal ``quantile`` of the members' leave-one-out
distances to their centroid (a member's distance to the centroid of the others, ``n/(n-1)`` times its distance
to the full centroid, so that a new member is measured like the ones that made the group): the
``⌈(n+1)·quantile⌉``-th smallest of the ``n``, the largest when ``n`` is too small for that (under 9 at 0.9).
The radius is floored at :data:`RADIUS_FLOOR` (a tenth of the failures' RMS spread) so that a tight group still
admits anything. The nearest candidate is the one whose centroid is nearest (plain distance: a centroid is
better estimated than a radius, which for a small group is little more than its farthest member).

**Close enough** means ``distance ≤ 1`` to that nearest candidate: the input lies as close to the group's
centroid as ``quantile`` (e.g. 0.9) of the group's own members do. When it is not, ``cluster`` still names the
nearest candidate (with its sentence and concepts) and ``close_enough`` is False: the caller says "none close
enough" and may tell what was nearest.

On disk: ``failure_modes.npz`` + ``failure_modes.json`` inside the filter bundle folder; a bundle without them
has no failure modes (:meth:`FailureModes.load_optional` returns None).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from conceptlens.rootcause import TABLE_EXTRACTORS, concept_scores

FILES = ("failure_modes.npz", "failure_modes.json")
FORMAT = 1
FALLBACK = "vlm"  # the space an image extractor's clusters are matched in
NO_VLM_FALLBACK = "encoder"  # the space a VLM-embedding space is replaced by when serving reads no VLM embedding
# A group's centroid is off by about 1/sqrt(n) of its members' spread: at 5 members under half of it. Smaller
# groups are left out (their inputs match another group of the class, or none).
MIN_MEMBERS = 5
QUANTILE = 0.9  # close enough: as close as 9 in 10 of the group's own members (conformal, leave-one-out)
RADIUS_FLOOR = 0.1  # in units of the member failures' RMS distance from their mean
CONCEPTS_SHOWN = 3
HELDOUT = "heldout"


@dataclass
class FailureModes:
    """The chosen root-cause clusters as matchable groups (module docstring).

    ``pipeline``/``extractor``: rootcause's chosen pipeline and its extractor; ``space``: the table extractor
    matched in (the extractor, or ``vlm`` for an image extractor: ``note`` says why); ``centre`` ``(D,)`` and
    ``scale``: the member rows' mean and RMS norm; per group ``g``: ``centroids[g]`` ``(G, D)`` in the scaled
    space, ``radii[g]``, ``cluster[g]``, ``prediction[g]`` (the predicted class) and ``members[g]``;
    ``sentences``/``concepts``: per cluster id, the validated sentence (or None) and the card's top concepts;
    ``concept_embeddings``/``concept_mean``/``concept_std``: the analysis' concepts (``concepts`` space only)."""
    pipeline: str
    extractor: str
    space: str
    centre: np.ndarray
    scale: float
    centroids: np.ndarray
    radii: np.ndarray
    cluster: np.ndarray
    prediction: np.ndarray
    members: np.ndarray
    sentences: dict[int, str | None] = field(default_factory=dict)
    concepts: dict[int, list[str]] = field(default_factory=dict)
    concept_embeddings: np.ndarray | None = None
    concept_mean: np.ndarray | None = None
    concept_std: np.ndarray | None = None
    min_members: int = MIN_MEMBERS
    quantile: float = QUANTILE
    note: str | None = None

    # --- building -----------------------------------------------------------------------------
    @classmethod
    def fit(cls, x: np.ndarray, cluster: np.ndarray, prediction: np.ndarray, *, pipeline: str, extractor: str,
            space: str, sentences: dict | None = None, concepts: dict | None = None,
            concept_analysis: dict | None = None, min_members: int = MIN_MEMBERS, quantile: float = QUANTILE,
            note: str | None = None) -> "FailureModes | None":
        """Groups from member rows: ``x`` ``(N, D)`` raw features of ``space``, ``cluster`` ``(N,)`` (negative:
        noise, left out) and ``prediction`` ``(N,)``. None when no (cluster, prediction) group has ``min_members``
        rows. ``concept_analysis``: ``concepts``/``mean``/``std`` arrays, needed for the ``concepts`` space."""
        if not 0 < quantile <= 1 or min_members < 2:
            raise ValueError(f"quantile={quantile} must lie in (0, 1] and min_members={min_members} be at least 2")
        keep = np.asarray(cluster) >= 0
        x = np.asarray(x, np.float64)[keep]
        cluster, prediction = np.asarray(cluster, np.int64)[keep], np.asarray(prediction, np.int64)[keep]
        if not len(x):
            return None
        centre = x.mean(0)
        scale = max(float(np.sqrt(((x - centre) ** 2).sum(1).mean())), 1e-12)
        z = (x - centre) / scale
        groups = sorted({(c, p) for c, p in zip(cluster.tolist(), prediction.tolist())})
        rows = []
        for c, p in groups:
            mine = z[(cluster == c) & (prediction == p)]
            n = len(mine)
            if n < min_members:
                continue
            centroid = mine.mean(0)
            loo = np.sqrt(((mine - centroid) ** 2).sum(1)) * n / (n - 1)
            level = min(1.0, math.ceil((n + 1) * quantile) / n)  # split-conformal rank of the quantile
            radius = max(float(np.quantile(loo, level, method="higher")), RADIUS_FLOOR)
            rows.append((c, p, n, centroid, radius))
        if not rows:
            return None
        analysis = concept_analysis or {}
        return cls(pipeline, extractor, space, centre.astype(np.float32), scale,
                   np.stack([r[3] for r in rows]).astype(np.float32), np.array([r[4] for r in rows], np.float32),
                   np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                   np.array([r[2] for r in rows], np.int64),
                   {int(k): v for k, v in (sentences or {}).items()},
                   {int(k): list(v) for k, v in (concepts or {}).items()},
                   analysis.get("concepts"), analysis.get("mean"), analysis.get("std"),
                   min_members, quantile, note)

    @classmethod
    def from_outputs(cls, rootcause_dir: Path, explain_dir: Path | None, calib_rows: dict, *,
                     concepts: dict | None = None, min_members: int = MIN_MEMBERS, quantile: float = QUANTILE,
                     log: Callable[[str], None] | None = None, vlm: bool = True) -> "FailureModes | None":
        """The failure modes of a run: ``rootcause``'s outputs in ``rootcause_dir`` (the heldout set's chosen
        pipeline, its clusters and cards), ``explain``'s sentences in ``explain_dir`` (None or missing: no
        sentences), and ``calib_rows``: the calib split of the embeddings table (``id``, ``prediction``,
        ``label_index`` and the space's column; a row of any other split is a ValueError). ``concepts``: the
        analysis' ``concepts``/``mean``/``std`` (needed when the chosen extractor is ``concepts``; without it the
        ``vlm`` space is used). None, with the reason passed to ``log``, when rootcause has not run, has no
        heldout set, or no group of its calib failures has ``min_members`` rows. ``vlm=False``: the served columns
        carry no VLM embedding (a filter of ``concepts_from`` aligned), so a space that reads it is replaced by
        :data:`NO_VLM_FALLBACK` (the classifier's features), with a note."""
        say = log or (lambda message: None)
        rootcause_dir = Path(rootcause_dir)
        summary_file, clusters_file = rootcause_dir / "summary.json", rootcause_dir / "clusters.parquet"
        if not (summary_file.is_file() and clusters_file.is_file()):
            say(f"no failure modes: no rootcause outputs in {rootcause_dir} (run `conceptlens rootcause`)")
            return None
        summary = json.loads(summary_file.read_text())
        if HELDOUT not in summary.get("sets", {}):
            say(f"no failure modes: rootcause in {rootcause_dir} has no {HELDOUT} failure set")
            return None
        chosen = summary["sets"][HELDOUT]["chosen"]
        pipeline = chosen["pipeline"]
        extractor = chosen.get("extractor") or pipeline.split("/")[0]
        space, note = extractor, None
        if extractor not in TABLE_EXTRACTORS:
            space, note = FALLBACK, (f"the chosen extractor {extractor!r} needs models or fits the bundle does not "
                                     f"carry: failure modes are matched in the {FALLBACK} space")
        elif extractor == "concepts" and concepts is None:
            space, note = FALLBACK, (f"the chosen extractor 'concepts' needs the concept analysis, which was not "
                                     f"given: failure modes are matched in the {FALLBACK} space")
        if not vlm and TABLE_EXTRACTORS.get(space) == "vlm_embedding":
            space, note = NO_VLM_FALLBACK, ((note + "; ") if note else "") + (
                f"the filter reads no VLM image embedding at serving (concepts_from aligned): failure modes are "
                f"matched in the {NO_VLM_FALLBACK} space")
        if note:
            say(f"failure modes: {note}")
        splits = sorted({str(s) for s in np.asarray(calib_rows.get("split", ["calib"]))} - {"calib"})
        if splits:
            raise ValueError(f"calib_rows holds rows of split(s) {splits}: failure modes are built from calib rows "
                             f"only (test rows are what the scorecard checks)")
        members = _chosen_clusters(clusters_file, pipeline)
        ids = np.asarray(calib_rows["id"]).astype(str)
        cluster = np.array([members.get(i, -1) for i in ids.tolist()], np.int64)
        wrong = np.asarray(calib_rows["label_index"]) != np.asarray(calib_rows["prediction"])
        cluster[~wrong] = -1
        if not (cluster >= 0).any():
            say(f"no failure modes: none of the {len(ids)} calib rows is a clustered failure of {pipeline} "
                f"(run rootcause on splits that include calib)")
            return None
        take = cluster >= 0
        analysis = concepts if space == "concepts" else None
        x = _space_features(space, {k: np.asarray(v)[take] for k, v in calib_rows.items()
                                    if k in ("vlm_embedding", "features")}, analysis)
        found = cls.fit(x, cluster[take], np.asarray(calib_rows["prediction"])[take], pipeline=pipeline,
                        extractor=extractor, space=space, sentences=_sentences(explain_dir, pipeline, say),
                        concepts=_card_concepts(rootcause_dir / "cards.json"),
                        concept_analysis=None if analysis is None else
                        {"concepts": analysis["concepts"], "mean": analysis["mean"], "std": analysis["std"]},
                        min_members=min_members, quantile=quantile, note=note)
        if found is None:
            say(f"no failure modes: no (cluster, predicted class) group of {pipeline}'s {int(take.sum())} calib "
                f"failures has {min_members} rows")
        return found

    # --- matching -----------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        """The batch columns :meth:`match` reads."""
        return ("prediction", TABLE_EXTRACTORS[self.space])

    def nearest(self, batch: dict) -> dict[str, np.ndarray]:
        """Per input, vectorised: ``cluster`` int64 (the nearest candidate's cluster; -1: no candidate for the
        predicted class), ``distance`` float32 (in radii; NaN without a candidate) and ``close_enough`` bool
        (``distance ≤ 1``)."""
        predicted = np.asarray(batch["prediction"], np.int64).reshape(-1)
        analysis = None if self.concept_embeddings is None else {
            "concepts": self.concept_embeddings, "mean": self.concept_mean, "std": self.concept_std}
        z = (_space_features(self.space, batch, analysis) - self.centre) / self.scale
        d2 = (z ** 2).sum(1, keepdims=True) - 2 * z @ self.centroids.T + (self.centroids ** 2).sum(1)[None, :]
        d2[self.prediction[None, :] != predicted[:, None]] = np.inf  # candidates: the predicted class's groups
        best = d2.argmin(1)  # an input whose predicted class has no group: all inf, no candidate
        has = np.isfinite(d2[np.arange(len(z)), best])
        distance = np.sqrt(np.maximum(d2[np.arange(len(z)), best], 0)) / self.radii[best]
        return {"cluster": np.where(has, self.cluster[best], -1).astype(np.int64),
                "distance": np.where(has, distance, np.nan).astype(np.float32),
                "close_enough": has & (distance <= 1.0)}

    def match(self, batch: dict) -> list[dict]:
        """Per input (``batch``: ``prediction`` and the space's column, see :attr:`columns`): ``cluster`` (int,
        the nearest candidate's; None without a candidate for the predicted class), ``distance`` (in radii,
        module docstring; None without a candidate), ``close_enough`` (``distance ≤ 1``), ``sentence`` (the
        cluster's validated sentence, or None) and ``concepts`` (its card's top concepts). Sentence and concepts
        describe the named cluster also when it is not close enough: say "looks like" only when
        ``close_enough``."""
        found = self.nearest(batch)
        out = []
        for c, d, ok in zip(found["cluster"].tolist(), found["distance"].tolist(), found["close_enough"].tolist()):
            if c < 0:
                out.append({"cluster": None, "distance": None, "close_enough": False, "sentence": None,
                            "concepts": []})
            else:
                out.append({"cluster": c, "distance": d, "close_enough": bool(ok), "sentence": self.sentences.get(c),
                            "concepts": list(self.concepts.get(c, []))})
        return out

    # --- bundle -------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """``failure_modes.npz`` + ``failure_modes.json`` in ``folder`` (a filter bundle: save after the filter,
        whose bundle writer empties the folder first); returns ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"centre": self.centre, "centroids": self.centroids, "radii": self.radii, "cluster": self.cluster,
                  "prediction": self.prediction, "members": self.members}
        if self.concept_embeddings is not None:
            arrays |= {"concept_embeddings": self.concept_embeddings, "concept_mean": self.concept_mean,
                       "concept_std": self.concept_std}
        np.savez(folder / FILES[0], **arrays)
        info = {"format": FORMAT, "pipeline": self.pipeline, "extractor": self.extractor, "space": self.space,
                "scale": self.scale, "min_members": self.min_members, "quantile": self.quantile,
                "radius_floor": RADIUS_FLOOR, "note": self.note,
                "sentences": {str(k): v for k, v in sorted(self.sentences.items())},
                "concepts": {str(k): v for k, v in sorted(self.concepts.items())}}
        (folder / FILES[1]).write_text(json.dumps(info, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "FailureModes":
        """The failure modes saved in ``folder``; FileNotFoundError when it has none."""
        folder = Path(folder)
        if not all((folder / name).is_file() for name in FILES):
            raise FileNotFoundError(f"no failure modes ({', '.join(FILES)}) in {folder}")
        info = json.loads((folder / FILES[1]).read_text())
        if info.get("format") != FORMAT:
            raise ValueError(f"the failure modes in {folder} have format {info.get('format')}, this version reads "
                             f"{FORMAT}: re-run `conceptlens monitor` to rebuild them")
        a = np.load(folder / FILES[0])
        optional = {k: a[k] if k in a else None for k in ("concept_embeddings", "concept_mean", "concept_std")}
        return cls(info["pipeline"], info["extractor"], info["space"], a["centre"], float(info["scale"]),
                   a["centroids"], a["radii"], a["cluster"], a["prediction"], a["members"],
                   {int(k): v for k, v in info["sentences"].items()},
                   {int(k): list(v) for k, v in info["concepts"].items()}, **optional,
                   min_members=int(info["min_members"]), quantile=float(info["quantile"]), note=info.get("note"))

    @classmethod
    def load_optional(cls, folder: str | Path) -> "FailureModes | None":
        """:meth:`load`, or None for a bundle saved without failure modes."""
        folder = Path(folder)
        return cls.load(folder) if (folder / FILES[1]).is_file() else None

    def describe(self) -> dict:
        """A JSON-able summary: the pipeline, the space, the settings and each cluster's groups."""
        return {"pipeline": self.pipeline, "extractor": self.extractor, "space": self.space, "note": self.note,
                "min_members": self.min_members, "quantile": self.quantile, "groups": len(self.cluster),
                "clusters": {int(c): {"predicted": self.prediction[self.cluster == c].tolist(),
                                      "members": int(self.members[self.cluster == c].sum()),
                                      "sentence": self.sentences.get(int(c)),
                                      "concepts": self.concepts.get(int(c), [])}
                             for c in np.unique(self.cluster).tolist()}}


def _space_features(space: str, batch: dict, analysis: dict | None) -> np.ndarray:
    """The raw features of ``space`` for ``batch``: ``(N, D)`` float32."""
    column = TABLE_EXTRACTORS[space]
    if column not in batch:
        raise KeyError(f"failure modes in the {space} space need the batch column {column!r}")
    x = np.asarray(batch[column], np.float32)
    x = x.reshape(len(x), -1)
    if space == "concepts":
        x = concept_scores(x, analysis["concepts"], analysis["mean"], analysis["std"])
    return x


def _chosen_clusters(clusters_file: Path, pipeline: str) -> dict[str, int]:
    """Row id -> cluster of the heldout set's ``pipeline`` (noise rows left out)."""
    import pyarrow.parquet as pq

    table = pq.read_table(clusters_file, columns=["set", "id", "pipeline", "cluster", "noise"]).to_pydict()
    return {i: int(c) for s, i, p, c, noise in zip(table["set"], table["id"], table["pipeline"], table["cluster"],
                                                   table["noise"])
            if s == HELDOUT and p == pipeline and not noise and c >= 0}


def _sentences(explain_dir: Path | None, pipeline: str, say: Callable[[str], None]) -> dict[int, str]:
    """Per cluster, the validated sentence explain shows first with its default method; nothing when explain
    has not run or described other clusters than ``pipeline``'s."""
    if explain_dir is None or not (Path(explain_dir) / "sentences.parquet").is_file():
        say("failure modes: no explain outputs: the clusters have no sentences (run `conceptlens explain`)")
        return {}
    import pyarrow.parquet as pq

    explain_dir = Path(explain_dir)
    summary_file = explain_dir / "summary.json"
    source = json.loads(summary_file.read_text()).get("source") if summary_file.is_file() else None
    if source != f"rootcause {pipeline}":
        say(f"failure modes: explain described {source!r}, not rootcause's chosen {pipeline}: no sentences")
        return {}
    table = pq.read_table(explain_dir / "sentences.parquet",
                          columns=["cluster", "rank", "sentence", "validated", "shown", "default"]).to_pylist()
    best: dict[int, tuple[int, str]] = {}
    for row in table:
        if row["default"] and row["shown"] and row["validated"]:
            c = int(row["cluster"])
            if c not in best or row["rank"] < best[c][0]:
                best[c] = (row["rank"], row["sentence"])
    return {c: sentence for c, (_, sentence) in best.items()}


def _card_concepts(cards_file: Path, top: int = CONCEPTS_SHOWN) -> dict[int, list[str]]:
    """Per cluster, the heldout card's first ``top`` concepts that are more frequent in the cluster than among
    the correct rows (ratio > 1)."""
    if not cards_file.is_file():
        return {}
    cards = json.loads(cards_file.read_text()).get(HELDOUT, [])
    return {int(card["cluster"]): [c["concept"] for c in card.get("concepts", []) if c["ratio"] > 1][:top]
            for card in cards}
