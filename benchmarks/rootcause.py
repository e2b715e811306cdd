"""Cost of root-cause clustering (`conceptlens rootcause`): the pipeline grid on 1 vs 2 Ray workers, and how the
time and peak memory of one pipeline grow with the number of failures.

(1) Grid wall time on a run's failures (``--run``, a folder `conceptlens demo` wrote): the misclassified rows of
    the calib and test splits, read straight from ``<run>/embed/embeddings``; the table extractors ``vlm``,
    ``encoder`` and (when ``<run>/analyze/concepts.npz`` exists) ``concepts``, each with the label block
    (``with_labels``, weight 1); × reductions none, pca, umap × clusterings kmeans, dbscan, hdbscan, hierarchical
    (36 pipelines with concepts), with `RootcauseConfig`'s defaults (10 components, fit on 5,000 rows, k up to
    20). The image extractors (backbone, autoencoder, relevance) are left out: they are Ray Data actor jobs whose
    cost is the models', measured by ``embed_throughput.py``, not the grid's. The grid runs as
    ``run_grid``'s Ray tasks (one CPU each) on a fresh local Ray with 1 and then with 2 CPUs, twice on each:

      first run   what a `rootcause` command pays: worker processes start, import the library and compile
                  UMAP's numba code (each worker compiles its own; numba's on-disk cache helps where present)
      second run  the same grid on the same Ray, workers already warm: the steady-state figure

    and, as the baseline, a plain loop in this process (no Ray; ``reduce`` once per (extractor, reduction), then
    ``cluster`` per pipeline), first and second run likewise. Ray's start (``ray.init``) is timed apart.
    "Work" is the sum of the task times (each reduction once + each clustering), so wall / work says how much the
    workers overlapped. Ray workers run with OMP_NUM_THREADS=1 (Ray's default for a 1-CPU task); the plain loop
    is limited to as many BLAS/OpenMP threads (``--plain-threads 1``, through threadpoolctl), so Ray(1) / plain is
    Ray's overhead and Ray(2) / plain the parallel gain. (With the libraries' default threads, k-means' OpenMP
    threads spin against other jobs on a loaded 2-core machine and the plain loop slows down many times over.)

(2) Scaling of one pipeline (``--pipeline``, reduction/clustering; default ``umap/kmeans``: the demo's chosen
    ``vlm/umap/kmeans``) on synthetic failure sets of ``--rows`` rows, each size in a fresh spawned process: 128-d
    unit-norm vectors like the demo's VLM embedding (10 class prototypes; 8 causes of 16 % down to a rare 2 % of
    the rows, each a shifted blob within one class, two causes sharing a class; 30 % "natural" rows scattered
    around their class prototype), labels over 10 classes, ``with_labels`` then the pipeline. Reported: wall time
    of the reduction and of the clustering (UMAP's numba compilation is done first on a small set and reported
    apart, so the stages scale cleanly), the process's peak RSS during each stage (Linux: the high-water mark is
    reset through /proc/self/clear_refs before each) and over the whole process, and purity / coverage of the
    clusters against the synthetic causes (``cluster_scores``) so the numbers also say whether quality holds.
    The first process ever to fit UMAP on more than 4,096 rows (the NNDescent path; the demo's few hundred
    failures never take it) also compiles and caches pynndescent's numba functions, so its warm-up is far longer
    than later ones. Several ``--pipeline`` values share the reduction within a size. A size still running after ``--timeout``
    seconds is stopped and reported as such, with the stages it finished.

Where the cost grows with rows (``rootcause/cluster.py``, ``reduce.py``): UMAP and Ward are fitted on
``fit_rows`` rows and the silhouette is taken on 3,000, so they are bounded; UMAP's ``transform`` and k-means
(k = 2..20, 4 inits each) are linear in rows. Two clusterings are not: ``hdbscan`` (scikit-learn's, kd-tree
path) builds its minimum spanning tree with Prim's algorithm over the data matrix, O(N²) time per candidate
setting (5 of them); ``dbscan`` picks eps on a 3,000-row sample and applies it to all N rows, so each row's
eps-neighbourhood grows in proportion to N: O(N²) time and neighbour-list memory. ``--pipeline umap/dbscan
umap/hdbscan`` measures them.

    .venv/bin/python benchmarks/rootcause.py --run runs/demo [--rows 10000 100000] [--pipeline umap/kmeans]
        [--skip-grid | --skip-scaling] [--out runs/benchmarks/rootcause.json]

Timings are wall clock on a shared machine: other jobs running at the same time inflate them, and the load
average at the start is recorded in the JSON.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import resource
import time
from pathlib import Path

import numpy as np

from conceptlens.config import RayConfig, RootcauseConfig
from conceptlens.rootcause import Pipeline, cluster, concept_scores, grid, reduce, with_labels

DEFAULTS = RootcauseConfig()
REDUCTIONS = ("none", "pca", "umap")
CLUSTERINGS = ("kmeans", "dbscan", "hdbscan", "hierarchical")
# synthetic causes: (name, share of rows, class); the rest (30 %) are natural errors of any class
CAUSES = (("c0", 0.16, 0), ("c1", 0.13, 1), ("c2", 0.11, 2), ("c3", 0.09, 3), ("c4", 0.08, 4), ("c5", 0.07, 5),
          ("c6", 0.04, 0), ("rare", 0.02, 6))
DIM, CLASSES = 128, 10


def settings(args) -> dict:
    return {"components": args.components, "fit_rows": args.fit_rows, "max_clusters": args.max_clusters,
            "seed": args.seed}


# ---------------------------------------------------------------------------------------------------------------
# (1) the grid on a run's failures


def run_features(run: Path) -> tuple[dict[str, np.ndarray], int]:
    """The table extractors' features of the run's calib+test failures, label block appended; and the row count."""
    from conceptlens.pipeline.shards import read_rows

    rows = read_rows(run / "embed" / "embeddings", DEFAULTS.splits)
    wrong = rows["label_index"] != rows["prediction"]
    rows = {k: v[wrong] for k, v in rows.items()}
    classes = int(rows["label_index"].max()) + 1
    inputs = run / "embed" / "inputs.json"
    if inputs.is_file():
        classes = max(classes, json.loads(inputs.read_text())["inputs"].get("classifier.num_classes") or 0)
    raw = {"vlm": rows["vlm_embedding"], "encoder": rows["features"]}
    npz = run / "analyze" / "concepts.npz"
    if npz.is_file():
        text = np.load(npz)
        raw["concepts"] = concept_scores(rows["vlm_embedding"], text["concepts"], text["vlm_mean"], text["vlm_std"])
    return {name: with_labels(x, rows["label_index"], classes, 1.0) for name, x in raw.items()}, int(wrong.sum())


def plain_grid(features: dict, pipelines: list[Pipeline], cfg: dict, threads: int) -> dict:
    """The grid in this process: each reduction once, then each clustering; BLAS/OpenMP limited to ``threads``
    (0: the libraries' default)."""
    from threadpoolctl import threadpool_limits

    if threads:
        with threadpool_limits(limits=threads):
            return plain_grid(features, pipelines, cfg, 0)
    start, reduced, work = time.perf_counter(), {}, {}
    indices = {}
    for p in pipelines:
        key = (p.extractor, p.reduction)
        if key not in reduced:
            t = time.perf_counter()
            reduced[key] = reduce(features[p.extractor], p.reduction, components=cfg["components"],
                                  fit_rows=cfg["fit_rows"], seed=cfg["seed"])
            work["/".join(key)] = time.perf_counter() - t
        t = time.perf_counter()
        found = cluster(reduced[key], p.clustering, max_clusters=cfg["max_clusters"], seed=cfg["seed"],
                        fit_rows=cfg["fit_rows"])
        work[p.name] = time.perf_counter() - t
        indices[p.name] = found.index
    return {"wall_s": time.perf_counter() - start, "work_s": sum(work.values()), "stage_s": work, "index": indices}


def ray_grid(features: dict, pipelines: list[Pipeline], cfg: dict) -> dict:
    """The grid as `run_grid`'s Ray tasks; work = each reduction once + each clustering, as the tasks timed them."""
    import ray

    from conceptlens.rootcause import run_grid

    start = time.perf_counter()
    results = run_grid(features, pipelines, components=cfg["components"], fit_rows=cfg["fit_rows"],
                       max_clusters=cfg["max_clusters"], seed=cfg["seed"], num_cpus=1.0)
    wall = time.perf_counter() - start
    stage = {}
    for r in results:
        reduction = ray.get(r.reduced)["seconds"]
        stage[f"{r.pipeline.extractor}/{r.pipeline.reduction}"] = reduction
        stage[r.pipeline.name] = r.seconds - reduction
    return {"wall_s": wall, "work_s": sum(stage.values()), "stage_s": stage,
            "index": {r.pipeline.name: r.clustering.index for r in results}}


def _worker_threads() -> str:
    return os.environ.get("OMP_NUM_THREADS", "unset")


def grid_part(args) -> dict:
    import ray

    features, failures = run_features(Path(args.run))
    pipelines = grid(list(features), REDUCTIONS, CLUSTERINGS)
    cfg = settings(args)
    print(f"grid: {failures} failures, extractors {list(features)} "
          f"({', '.join(f'{k} {v.shape[1]}-d' for k, v in features.items())}), {len(pipelines)} pipelines", flush=True)
    out = {"plain_threads": args.plain_threads or "library default", "failures": failures, "extractors": {k: int(v.shape[1]) for k, v in features.items()},
           "pipelines": len(pipelines), "settings": {}}
    for label in ("first", "second"):
        out["settings"].setdefault("plain", {})[label] = plain_grid(features, pipelines, cfg, args.plain_threads)
        print(f"  plain, {label} run: {out['settings']['plain'][label]['wall_s']:.1f} s", flush=True)
    for workers in args.workers:
        start = time.perf_counter()
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 object_store_memory=RayConfig().object_store_mb * 2**20)
        entry = {"init_s": time.perf_counter() - start}
        for label in ("first", "second"):
            entry[label] = ray_grid(features, pipelines, cfg)
            print(f"  Ray {workers} worker(s), {label} run: {entry[label]['wall_s']:.1f} s", flush=True)
        entry["worker_omp_threads"] = ray.get(ray.remote(num_cpus=1)(_worker_threads).remote())
        ray.shutdown()
        out["settings"][f"ray{workers}"] = entry
    plain = out["settings"]["plain"]["second"]["index"]
    out["max_index_difference_vs_plain"] = max(
        abs(s[label]["index"][name] - plain[name]) for key, s in out["settings"].items() for label in ("first", "second")
        for name in plain)
    return out


def print_grid(g: dict, workers: list[int]) -> None:
    print(f"\n### Grid: {g['pipelines']} pipelines on {g['failures']} failures "
          f"({', '.join(f'{k} {d}-d' for k, d in g['extractors'].items())})\n")
    print("| setting | Ray start s | first run wall s | first run work s | second run wall s | second run work s "
          "| second run wall / work |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, s in g["settings"].items():
        name = f"plain loop (no Ray, {g['plain_threads']} thread(s))" if key == "plain" else f"Ray, {key[3:]} worker(s)"
        init = f"{s['init_s']:.1f}" if "init_s" in s else "-"
        print(f"| {name} | {init} | {s['first']['wall_s']:.1f} | {s['first']['work_s']:.1f} "
              f"| {s['second']['wall_s']:.1f} | {s['second']['work_s']:.1f} "
              f"| {s['second']['wall_s'] / s['second']['work_s']:.2f} |")
    s = g["settings"]
    lines = []
    if 1 in workers and 2 in workers:
        for label in ("first", "second"):
            lines.append(f"speed-up 2 vs 1 workers, {label} run: "
                         f"{s['ray1'][label]['wall_s'] / s['ray2'][label]['wall_s']:.2f}x")
    for w in workers:
        for label in ("first", "second"):
            lines.append(f"time ratio Ray({w}) / plain, {label} run: "
                         f"{s[f'ray{w}'][label]['wall_s'] / s['plain'][label]['wall_s']:.2f}")
    print("\n" + "\n".join(f"- {line}" for line in lines))
    slow = sorted(s["plain"]["second"]["stage_s"].items(), key=lambda kv: -kv[1])[:6]
    print("- slowest stages (plain, second run): " + ", ".join(f"{k} {v:.1f} s" for k, v in slow))
    print(f"- largest |internal index| difference of any run vs the plain loop: {g['max_index_difference_vs_plain']:.2g}")


# ---------------------------------------------------------------------------------------------------------------
# (2) scaling of one pipeline on synthetic failures


def synthetic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N, 128)`` unit-norm features, class labels and the cause of each row (None: natural error)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(CLASSES, DIM)) / np.sqrt(DIM)  # unit-ish norm per class
    offsets = rng.normal(size=(len(CAUSES), DIM)) * 0.5 / np.sqrt(DIM)
    sizes = [int(round(share * rows)) for _, share, _ in CAUSES]
    x, labels, truth = [], [], []
    for (name, _, cls), size, offset in zip(CAUSES, sizes, offsets):
        x.append(prototypes[cls] + offset + rng.normal(size=(size, DIM)) * 0.4 / np.sqrt(DIM))
        labels.append(np.full(size, cls))
        truth += [name] * size
    natural = rows - sum(sizes)
    cls = rng.integers(0, CLASSES, natural)
    x.append(prototypes[cls] + rng.normal(size=(natural, DIM)) * 0.8 / np.sqrt(DIM))
    labels.append(cls)
    truth += [None] * natural
    x = np.concatenate(x).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(rows)
    return x[order], np.concatenate(labels)[order], np.array(truth, object)[order]


def _memory() -> dict:
    """Current and peak RSS of this process in MiB (Linux /proc; peak falls back to ru_maxrss)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rss_mb" if line.startswith("VmRSS") else "peak_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    out.setdefault("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def scale_child(rows: int, pipelines: list[str], cfg: dict, results) -> None:
    """One failure-set size, in its own process: stages reported on ``results`` (a queue) as they finish."""
    from conceptlens.evaluation.clusters import cluster_scores

    start = time.perf_counter()
    x, labels, truth = synthetic(rows, cfg["seed"])
    features = with_labels(x, labels, CLASSES, 1.0)
    del x
    results.put({"stage": "data", "seconds": time.perf_counter() - start, **_memory()})
    reductions = list(dict.fromkeys(p.split("/")[0] for p in pipelines))
    if "umap" in reductions:  # numba compiles UMAP's and NNDescent's code paths once per process: done here, apart
        start = time.perf_counter()
        small = features[np.random.default_rng(1).choice(rows, min(rows, cfg["fit_rows"] + 500), replace=False)]
        reduce(small, "umap", components=cfg["components"], fit_rows=cfg["fit_rows"], seed=cfg["seed"])
        results.put({"stage": "umap warm-up (numba compile)", "seconds": time.perf_counter() - start, **_memory()})
    reduced = {}
    for name in pipelines:
        reduction, clustering = name.split("/")
        if reduction not in reduced:
            exact, before = _reset_peak(), _memory().get("rss_mb")
            start = time.perf_counter()
            reduced[reduction] = reduce(features, reduction, components=cfg["components"], fit_rows=cfg["fit_rows"],
                                        seed=cfg["seed"])
            results.put({"stage": f"reduce {reduction}", "seconds": time.perf_counter() - start,
                         "peak_is_stage": exact, "start_mb": before, **_memory()})
        exact, before = _reset_peak(), _memory().get("rss_mb")
        start = time.perf_counter()
        found = cluster(reduced[reduction], clustering, max_clusters=cfg["max_clusters"], seed=cfg["seed"],
                        fit_rows=cfg["fit_rows"])
        seconds = time.perf_counter() - start
        scores = cluster_scores(found.labels, truth)
        results.put({"stage": f"cluster {name}", "seconds": seconds, "peak_is_stage": exact, "start_mb": before,
                     **_memory(),
                     "index": found.index, "clusters": found.clusters, "noise_share": found.noise_share,
                     "params": found.params, "candidates": len(found.tried),
                     "scores": {k: {m: v[m] for m in ("purity", "coverage", "clusters", "noise_share")}
                                for k, v in scores.items()},
                     "rare_recall": scores["planted_only"]["scenarios"]["rare"]["recall"]})
    results.put({"stage": "done", "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def scale_one(rows: int, pipelines: list[str], cfg: dict, timeout: float) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=scale_child, args=(rows, pipelines, cfg, results), daemon=True)
    start = time.perf_counter()
    child.start()
    stages, out = [], {"rows": rows, "completed": False}
    while True:
        left = timeout - (time.perf_counter() - start)
        try:
            stage = results.get(timeout=max(left, 0.1) if child.is_alive() else 5)
        except queue_module.Empty:
            if child.is_alive():
                child.terminate()  # the process this function started, by its handle
                out["stopped_after_s"] = timeout
            else:
                out["exit_code"] = child.exitcode
            break
        if stage["stage"] == "done":
            out["completed"], out["process_peak_mb"] = True, stage["process_peak_mb"]
            break
        stages.append(stage)
        print(f"  {rows} rows: {stage['stage']} {stage['seconds']:.1f} s, peak RSS {stage['peak_mb']:.0f} MiB",
              flush=True)
    child.join(30)
    out["wall_s"], out["stages"] = time.perf_counter() - start, stages
    return out


def _peak(stage: dict) -> str:
    """A stage's peak RSS, with its rise over the RSS the stage started at when the peak was reset for it."""
    rise = stage["peak_mb"] - stage["start_mb"] if stage.get("peak_is_stage") and stage.get("start_mb") else None
    return f"{stage['peak_mb']:.0f}" + ("" if rise is None else f" (+{rise:.0f})")


def print_scaling(scaling: list[dict], pipelines: list[str]) -> None:
    print("\n### Scaling on synthetic failures (vlm-like 128-d + label block; 8 causes incl. a 2 % rare one, "
          "30 % natural)\n")
    print("RSS before: after imports and the data. Peak RSS of a stage: the process's peak during it (+ its rise "
          "over the RSS the stage started at; the rest is imports, numba's compiled code and earlier stages).\n")
    print("| rows | pipeline | reduce s | cluster s | total s | RSS before MiB | peak RSS reduce MiB "
          "| peak RSS cluster MiB | process peak MiB | clusters | params | index | purity (planted) | coverage (planted) "
          "| purity (with natural) | rare recall |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for s in scaling:
        by = {st["stage"]: st for st in s["stages"]}
        for name in pipelines:
            red, clu = by.get(f"reduce {name.split('/')[0]}"), by.get(f"cluster {name}")
            cells = [f"{s['rows']:,}", name, f"{red['seconds']:.1f}" if red else "stopped"]
            if clu:
                p, w = clu["scores"]["planted_only"], clu["scores"]["with_natural"]
                params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in clu["params"].items())
                cells += [f"{clu['seconds']:.1f}", f"{red['seconds'] + clu['seconds']:.1f}",
                          f"{by['data']['rss_mb']:.0f}", _peak(red), _peak(clu), f"{s['process_peak_mb']:.0f}" if s["completed"] else "-",
                          str(clu["clusters"]), params, f"{clu['index']:.3f}", f"{p['purity']:.2f}",
                          f"{p['coverage']:.2f}", f"{w['purity']:.2f}",
                          "-" if clu["rare_recall"] is None else f"{clu['rare_recall']:.2f}"]
            else:
                cells += ["stopped" if red else "-"] + ["-"] * 12
            print("| " + " | ".join(cells) + " |")
    for s in scaling:
        extra = {st["stage"]: st["seconds"] for st in s["stages"] if not st["stage"].startswith(("reduce", "cluster"))}
        note = ", ".join(f"{k} {v:.1f} s" for k, v in extra.items())
        state = "completed" if s["completed"] else (f"STOPPED after {s['stopped_after_s']:.0f} s" if "stopped_after_s" in s
                                                    else f"FAILED (exit code {s.get('exit_code')})")
        print(f"- {s['rows']:,} rows: {state}, process wall {s['wall_s']:.1f} s ({note})")


# ---------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="a run folder with embed (and analyze) outputs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local Ray CPUs to compare")
    parser.add_argument("--rows", type=int, nargs="+", default=[10000, 100000], help="synthetic failure-set sizes")
    parser.add_argument("--pipeline", nargs="+", default=["umap/kmeans"], metavar="REDUCTION/CLUSTERING",
                        help="pipeline(s) of the scaling part")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one size may take before it is stopped")
    parser.add_argument("--components", type=int, default=DEFAULTS.components)
    parser.add_argument("--fit-rows", type=int, default=DEFAULTS.fit_rows)
    parser.add_argument("--max-clusters", type=int, default=DEFAULTS.max_clusters)
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--plain-threads", type=int, default=1,
                        help="BLAS/OpenMP threads of the plain loop (0: the libraries' default, all cores)")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--out", default="runs/benchmarks/rootcause.json", help="JSON results")
    args = parser.parse_args()
    for name in args.pipeline:
        parts = name.split("/")
        if len(parts) != 2 or parts[0] not in REDUCTIONS or parts[1] not in CLUSTERINGS:
            parser.error(f"--pipeline {name!r} is not reduction/clustering, e.g. umap/kmeans")
    result = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                          "python": platform.python_version()},
              "settings": settings(args)}
    timing = {}
    if not args.skip_scaling:
        start = time.perf_counter()
        result["scaling"] = {"pipelines": args.pipeline,
                             "sizes": [scale_one(rows, args.pipeline, settings(args), args.timeout) for rows in args.rows]}
        timing["scaling_s"] = time.perf_counter() - start
    if not args.skip_grid:
        start = time.perf_counter()
        result["grid"] = grid_part(args)
        timing["grid_s"] = time.perf_counter() - start
    result["benchmark_seconds"] = timing
    if "scaling" in result:
        print_scaling(result["scaling"]["sizes"], args.pipeline)
    if "grid" in result:
        print_grid(result["grid"], args.workers)
    print(f"\nload average at start {', '.join(f'{x:.2f}' for x in result['machine']['load_average_at_start'])} on "
          f"{result['machine']['cpus']} CPUs; benchmark parts: "
          + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timing.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
