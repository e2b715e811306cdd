"""The pipeline grid (feature extractor × reduction × clustering) run as Ray tasks.

Each extractor's features go to the object store once; each (extractor, reduction) is one task whose output is
shared by the clustering tasks that depend on it, so a grid spreads over a cluster and no reduction runs twice.
The pipeline a user gets is the one with the best internal index (:func:`conceptlens.rootcause.cluster.cluster`),
never chosen by the ground truth.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

import numpy as np

from conceptlens.pipeline.raydata import completed, fetch, put, submit
from conceptlens.rootcause.cluster import CLUSTERINGS, Clustering, cluster
from conceptlens.rootcause.reduce import REDUCTIONS, reduce

HUDD = ("relevance", "none", "hudd")  # HUDD's own pipeline: relevance heatmaps, pairwise distances, Ward at the knee


@dataclass(frozen=True)
class Pipeline:
    extractor: str
    reduction: str
    clustering: str

    @property
    def name(self) -> str:
        return f"{self.extractor}/{self.reduction}/{self.clustering}"

    @classmethod
    def parse(cls, name: str) -> "Pipeline":
        parts = name.split("/")
        if len(parts) != 3:
            raise ValueError(f"pipeline {name!r} is not extractor/reduction/clustering (e.g. vlm/umap/dbscan)")
        return cls(*parts)


@dataclass
class PipelineResult:
    pipeline: Pipeline
    clustering: Clustering
    seconds: float  # reduction (shared, counted in full) + clustering
    reduced: object = None  # object reference of the reduction's output (see :func:`points`)

    def row(self) -> dict:
        """The pipelines table's row."""
        p, c = self.pipeline, self.clustering
        return {"pipeline": p.name, "extractor": p.extractor, "reduction": p.reduction, "clustering": p.clustering,
                "index": c.index, "clusters": c.clusters, "noise_share": c.noise_share, "seconds": self.seconds,
                "params": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in c.params.items())}


def grid(extractors: Sequence[str], reductions: Sequence[str], clusterings: Sequence[str],
         hudd: bool = False) -> list[Pipeline]:
    """Every combination, plus HUDD's pipeline when asked for and ``relevance`` is among the extractors."""
    for name, given, known in (("reduction", reductions, REDUCTIONS), ("clustering", clusterings, CLUSTERINGS)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"unknown {name}(s) {unknown}: choose from {list(known)}")
    out = [Pipeline(e, r, c) for e in extractors for r in reductions for c in clusterings]
    if hudd and HUDD[0] in extractors and Pipeline(*HUDD) not in out:
        out.append(Pipeline(*HUDD))
    return out


def _reduce(features: np.ndarray, method: str, components: int, fit_rows: int, seed: int) -> dict:
    start = time.perf_counter()
    points = reduce(features, method, components=components, fit_rows=fit_rows, seed=seed)
    return {"points": points, "seconds": time.perf_counter() - start}


def _cluster(reduced: dict, method: str, max_clusters: int, fit_rows: int, seed: int) -> tuple[Clustering, float]:
    start = time.perf_counter()
    found = cluster(reduced["points"], method, max_clusters=max_clusters, seed=seed, fit_rows=fit_rows)
    return found, reduced["seconds"] + time.perf_counter() - start


def run_grid(features: Mapping[str, np.ndarray], pipelines: Sequence[Pipeline], *, components: int = 10,
             fit_rows: int = 5000, max_clusters: int = 20, seed: int = 0, num_cpus: float = 1.0,
             progress: Callable[[PipelineResult, int, int], None] | None = None) -> list[PipelineResult]:
    """Run ``pipelines`` on ``features`` (extractor name -> ``(N, D)``, the same rows in the same order) as Ray
    tasks; results in the order of ``pipelines``. ``progress(result, done, total)`` is called as each finishes."""
    missing = sorted({p.extractor for p in pipelines} - set(features))
    if missing:
        raise ValueError(f"no features for extractor(s) {missing}")
    refs = {name: put(np.asarray(x, np.float32)) for name, x in features.items()}
    reduced = {key: submit(_reduce, refs[key[0]], key[1], components, fit_rows, seed, num_cpus=num_cpus)
               for key in dict.fromkeys((p.extractor, p.reduction) for p in pipelines)}
    tasks = [submit(_cluster, reduced[(p.extractor, p.reduction)], p.clustering, max_clusters, fit_rows, seed,
                    num_cpus=num_cpus) for p in pipelines]
    results: list[PipelineResult | None] = [None] * len(pipelines)
    for done, (i, (found, seconds)) in enumerate(completed(tasks), 1):
        p = pipelines[i]
        results[i] = PipelineResult(p, found, seconds, reduced[(p.extractor, p.reduction)])
        if progress:
            progress(results[i], done, len(pipelines))
    return results


def choose(results: Sequence[PipelineResult], name: str | None = None, avoid: Collection[str] = ()) -> PipelineResult:
    """The result of pipeline ``name`` when given, else the best internal index (ties: the first) among the
    pipelines whose extractor is not in ``avoid`` (all of them when every one is)."""
    if name:
        for r in results:
            if r.pipeline.name == name:
                return r
        raise ValueError(f"rootcause.pipeline={name!r} is not in the grid: {[r.pipeline.name for r in results]}")
    allowed = [r for r in results if r.pipeline.extractor not in avoid] or list(results)
    return max(allowed, key=lambda r: r.clustering.index)


def points(result: PipelineResult) -> np.ndarray:
    """The rows in the space ``result`` clustered (its reduction's output)."""
    return fetch(result.reduced)["points"]
