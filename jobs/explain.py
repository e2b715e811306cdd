"""conceptlens explain: failure modes described in sentences (LBEE), each checked on rows that did not pick it.

Reads the rows of ``explain.splits`` from the embeddings table (``embed``), the hard clusters (``rootcause``'s
chosen pipeline, or k-means of the failures in the VLM space with ``explain.clusters=kmeans``) and a sentence
bank (``explain.bank``, else the bundled ConceptWorld one), embedded with the VLM's text tower (cached by content;
a Ray Data actor pool for large banks). Half of the rows (by a hash of the id) pick each cluster's sentences by
the four methods (TopS, SetDiff, PDiff, FPDiff); the other half validate them: each sentence's retrieved rows
must fail more often than the rest of its class (Fisher, Benjamini-Hochberg). Also the paper's metrics (AHR, ACR,
TPR, JI against the reference set S*_beta) per method, number of sentences and number of clusters.
Writes under ``<run>/explain/``: ``sentences.parquet`` (cluster, method, rank, sentence, its terms, score,
similarity, retrieved error rate, interval, q, validated, shown), ``hard.parquet`` (the clustered failures),
``figures/`` (the images each shown sentence retrieves; the metrics' curves), ``summary.json`` and
``metrics.json``; one nested MLflow run per method.
"""
from __future__ import annotations

import functools
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.jobs.analyze import class_names
from conceptlens.language.known import names_unknown, term_sentences
from conceptlens.language import (METHODS, Rows, SentenceBank, Settings, Vocabulary, build_bank, compose_negations,
                                  describe_clusters, embed_bank, method_metrics, near_easy_clusters, pick_rows,
                                  reference_set, retrieved_rows, universe,
                                  validate_sentences, validation_rows)
from conceptlens.models import TextEmbedder
from conceptlens.pipeline.raydata import init_ray, map_texts
from conceptlens.pipeline.runs import (Progress, analyze_dir, command_dir, embeddings_table, log, model_spec,
                                       run_inputs, write_metrics)
from conceptlens.pipeline.shards import read_rows
from conceptlens.pipeline.tracking import log_child_runs, log_results, mlflow_run
from conceptlens.report.figures import plot_curves, plot_montage
from conceptlens.semantic import read_trust
from conceptlens.semantic.trust import AbsenceCorrelation, GroupDecisiveness, Trust

CLUSTER_SOURCES = ("rootcause", "kmeans")
EASY_SETS = ("classes", "all")


def check_settings(cfg: Config) -> Vocabulary:
    """``explain.*`` checked before anything runs; the vocabulary loaded (a bad bank names its key)."""
    ex = cfg.explain
    if ex.method not in METHODS:
        raise ValueError(f"explain.method={ex.method!r}: choose one of {list(METHODS)}")
    if ex.easy not in EASY_SETS:
        raise ValueError(f"explain.easy={ex.easy!r}: choose one of {list(EASY_SETS)}")
    if ex.clusters not in CLUSTER_SOURCES:
        raise ValueError(f"explain.clusters={ex.clusters!r}: choose one of {list(CLUSTER_SOURCES)}")
    for key in ("pick_share", "retrieve_share", "class_share", "generic_share"):
        if not 0 < getattr(ex, key) < 1 + (key == "generic_share"):
            raise ValueError(f"explain.{key}={getattr(ex, key)} must lie in (0, 1)")
    return Vocabulary.load(ex.bank)


def sentence_embeddings(cfg: Config, bank: SentenceBank) -> np.ndarray:
    """The bank through the VLM's text tower, cached under ``<cache>/sentences/`` by the bank's and the VLM's
    content."""
    spec = model_spec(cfg)
    path = Path(cfg.run.cache_dir) / "sentences" / f"{bank.digest()}-{spec.fingerprint()['vlm']}.npy"
    if path.is_file():
        log(f"explain: {len(bank)} sentence embeddings from the cache ({path})")
        return np.load(path)
    ex, plain = cfg.explain, bank.plain()
    log(f"explain: embedding {len(plain)} sentences ({len(bank) - len(plain)} negations composed from them)")
    if len(plain) >= ex.ray_min_sentences:
        init_ray(cfg.ray)
        out, progress = None, Progress("explain: sentences", total=len(plain), unit="sentences")
        factory = functools.partial(TextEmbedder, spec, cfg.run.device)
        for batch in map_texts([bank.texts[i] for i in plain], factory, cfg.embed, batch_size=ex.batch_size):
            if out is None:
                out = np.zeros((len(bank), batch["text_embedding"].shape[1]), np.float32)
            out[np.asarray(plain)[batch["index"]]] = batch["text_embedding"]
            progress.update(len(batch["index"]))
        embeddings = compose_negations(bank, out)
    else:
        embeddings = embed_bank(bank, TextEmbedder(spec, cfg.run.device).encode, ex.batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings)
    return embeddings


def hard_clusters(cfg: Config, rows: dict) -> tuple[np.ndarray, str]:
    """``int (N,)`` hard cluster of each failure (-1: none, noise, or not a failure) and where it came from."""
    wrong = rows["label_index"] != rows["prediction"]
    if cfg.explain.clusters == "kmeans":
        from sklearn.cluster import KMeans

        labels = np.full(len(wrong), -1)
        k = min(cfg.explain.k, int(wrong.sum()))
        labels[wrong] = KMeans(k, n_init=4, random_state=cfg.explain.seed).fit_predict(rows["vlm_embedding"][wrong])
        return labels, f"kmeans (k={k}, VLM space)"
    folder = Path(cfg.run.root) / cfg.run.name / "rootcause"
    if not (folder / "summary.json").is_file():
        raise FileNotFoundError(f"no root-cause clusters at {folder}: run `conceptlens rootcause` first, or set "
                                f"explain.clusters=kmeans")
    chosen = json.loads((folder / "summary.json").read_text())["sets"]["heldout"]["chosen"]["pipeline"]
    table = pq.read_table(folder / "clusters.parquet").to_pydict()
    found = {i: c for s, i, p, c in zip(table["set"], table["id"], table["pipeline"], table["cluster"])
             if s == "heldout" and p == chosen}
    labels = np.array([found.get(i, -1) if w else -1 for i, w in zip(rows["id"].tolist(), wrong)])
    if not (labels >= 0).any():
        raise ValueError(f"none of the failures of explain.splits={list(cfg.explain.splits)} is in a cluster of "
                         f"rootcause's {chosen}: run rootcause on the same splits")
    return labels, f"rootcause {chosen}"


def load_rows(cfg: Config) -> tuple[dict, list[str]]:
    table = embeddings_table(cfg, cfg.explain.embeddings, "explain.embeddings")
    rows = read_rows(table, cfg.explain.splits, extra=["id", "path"])
    if len(rows["id"]) == 0:
        raise ValueError(f"no rows of splits {list(cfg.explain.splits)} in {table} (explain.splits)")
    return rows, class_names(cfg, table)


def settings_of(cfg: Config, depth: int) -> Settings:
    ex = cfg.explain
    return Settings(ex.class_share, ex.generic_share, ex.min_gain, ex.min_lift, ex.min_cluster, depth, ex.easy)


def sweep_clusters(cfg: Config, rows: dict, data: Rows, bank: SentenceBank, near_easy: np.ndarray,
                   reference: np.ndarray) -> dict:
    """The metrics at ``explain.top_k`` sentences for k-means clusterings of the failures (VLM space) of each
    size in ``explain.sweep_clusters``."""
    from sklearn.cluster import KMeans

    ex, out = cfg.explain, {}
    wrong = data.wrong
    progress = Progress("explain: cluster-count sweep", total=len(ex.sweep_clusters), unit="clusterings")
    for n in ex.sweep_clusters:
        labels = np.full(len(wrong), -1)
        labels[wrong] = KMeans(min(n, int(wrong.sum())), n_init=2, random_state=ex.seed).fit_predict(
            rows["vlm_embedding"][wrong])
        described = describe_clusters(Rows(data.sims, data.classes, wrong, labels, data.pick), bank, near_easy,
                                      settings_of(cfg, ex.top_k))
        metrics = method_metrics(described, reference, universe(bank, described), [ex.top_k])
        out[f"clusters{n}"] = {m: v[f"k{ex.top_k}"] for m, v in metrics.items()}
        progress.update(1)
    return out


def explain(cfg: Config) -> dict:
    ex = cfg.explain
    out = command_dir(cfg.run, "explain")
    rows, classes = load_rows(cfg)
    bank = build_bank(check_settings(cfg), classes)
    embeddings = sentence_embeddings(cfg, bank)
    clusters, source = hard_clusters(cfg, rows)
    unit = rows["vlm_embedding"] / np.maximum(np.linalg.norm(rows["vlm_embedding"], axis=1, keepdims=True), 1e-12)
    data = Rows(unit.astype(np.float32) @ embeddings.T, np.array([classes[i] for i in rows["label_index"]], object),
                rows["label_index"] != rows["prediction"], clusters, pick_rows(rows["id"].tolist(), ex.pick_share))
    easy = ~data.wrong & data.pick
    if easy.sum() < ex.easy_clusters or not data.pick.any() or data.pick.all():
        raise ValueError(f"too few rows to pick and validate sentences: {int(easy.sum())} correct picking rows "
                         f"(explain.splits, explain.pick_share)")
    near_easy = near_easy_clusters(unit[easy], embeddings, ex.easy_clusters, ex.setdiff_top, ex.seed)
    depth = max([ex.top_k, *ex.sweep_k])
    n_clusters = len(set(clusters[clusters >= 0].tolist()))
    log(f"explain: {len(bank)} sentences, {int(data.wrong.sum())} failures in {n_clusters} clusters ({source}); "
        f"{int(data.pick.sum())} rows pick, {int((~data.pick).sum())} validate")
    progress = Progress("explain: clusters", total=n_clusters, unit="clusters")
    described = describe_clusters(data, bank, near_easy, settings_of(cfg, depth), progress=progress.update)
    fallback = {d.cluster: d.contrast_missing for d in described if d.contrast_missing}
    if fallback:
        log(f"explain: {len(fallback)} cluster(s) hold a class without a correctly classified row "
            f"({', '.join(sorted({c for m in fallback.values() for c in m}))}): contrasted with every correct row "
            f"instead (as explain.easy=all)")
    retrieval = validation_rows(data, bank, ex.retrieve_share)
    reference = reference_set(retrieval, ex.beta)
    trust = read_trust(analyze_dir(cfg))
    unknown = unknown_terms(cfg, bank, data.sims, trust)
    if unknown:
        log(f"explain: the VLM cannot tell {len(unknown)} term(s) of the bank apart on these rows (analyze's trust "
            f"check, or the same tests on the bank's sentences): {', '.join(unknown)}; no sentence naming one is shown")
    table = sentence_table(cfg, bank, described, retrieval, data, set(unknown))
    withheld = None
    if trust is not None and not trust.sees_classes:  # the sentences are read by the VLM: none is a finding
        withheld = (f"the VLM does not recognise these classes (analyze's trust check: zero-shot accuracy "
                    f"{trust.zero_shot:.2f}, chance {1 / trust.classes:.2f}), so no sentence it reads is shown as a "
                    f"failure mode; a VLM that knows the domain: vlm.arch, vlm.pretrained")
        log(f"explain: {withheld}")
        table = table.set_column(table.schema.get_field_index("shown"), "shown",
                                 pa.array([False] * table.num_rows))
    summary = {"source": source, "withheld": withheld, "unknown_terms": unknown, "sentences": len(bank),
               "failures": int(data.wrong.sum()),
               "pick_rows": int(data.pick.sum()), "validate_rows": int((~data.pick).sum()), "method": ex.method,
               "clusters": cluster_summaries(described, data, np.array(classes, object)[rows["prediction"]], table),
               "metrics": method_metrics(described, reference, universe(bank, described), ex.sweep_k),
               "reference_size": int(reference.sum())}
    summary["sweep"] = sweep_clusters(cfg, rows, data, bank, near_easy, reference)
    pq.write_table(table, out / "sentences.parquet")
    pq.write_table(pa.table({"id": rows["id"], "class": data.classes.tolist(), "cluster": clusters, "pick": data.pick,
                             "wrong": data.wrong}),
                   out / "hard.parquet")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_metrics(out, metrics_of(summary, table))
    draw(cfg, summary, table, data, bank, rows["path"], out / "figures")
    return summary


def draw(cfg: Config, summary: dict, table: pa.Table, data: Rows, bank: SentenceBank, paths: np.ndarray,
         folder: Path) -> None:
    """``figures/cluster_<c>.png``: the validating images each shown sentence retrieves (what it describes);
    ``figures/metrics.png``: AHR and ACR per method against K and against the number of clusters."""
    folder.mkdir(exist_ok=True)
    held = np.flatnonzero(~data.pick)
    index = {t: i for i, t in enumerate(bank.texts)}
    for row in table.filter(pc.and_(table["shown"], table["default"])).to_pylist():
        found = held[retrieved_rows(data.sims[held], data.classes[held], bank, index[row["sentence"]],
                                    cfg.explain.retrieve_share)][:16]
        plot_montage([paths[i] for i in found], folder / f"cluster_{row['cluster']}.png",
                     title=f"cluster {row['cluster']}: \"{row['sentence']}\" ({row['error_rate']:.0%} wrong)")
    panels = {}
    for metric in ("ahr", "acr"):
        panels[f"{metric.upper()} vs sentences per cluster"] = {
            m: {int(k[1:]): v[metric] for k, v in by_k.items()} for m, by_k in summary["metrics"].items()}
        panels[f"{metric.upper()} vs clusters (k-means)"] = {
            m: {int(n[len("clusters"):]): summary["sweep"][n][m][metric] for n in summary["sweep"]} for m in METHODS}
    plot_curves(panels, folder / "metrics.png", title=f"LBEE metrics ({summary['source']})")


def unknown_terms(cfg: Config, bank: SentenceBank, sims: np.ndarray, trust: Trust | None) -> list[str]:
    """The bank's terms the VLM cannot tell apart on these rows (``sims``: ``(N, M)``). A term that is a concept of
    ``analyze`` takes its verdict; any other value of one of the bank's groups is judged by the decisiveness of the
    VLM's choice among the group's generic one-term sentences, and a distractor term (a word the data may never
    show, where a choice between two unknown words can still look decisive) by the absence and spread tests against
    the bare object; thresholds as ``analyze`` ran them."""
    single, bare = term_sentences(bank)
    if bare is None or len(sims) < 3 or not single:
        return []
    names, columns = list(single), sims[:, list(single.values())]
    check, decisive = AbsenceCorrelation(), GroupDecisiveness(names)
    check.update(columns, sims[:, bare])
    decisive.update(columns)
    a = cfg.analyze if trust is None else trust
    free = {t for t, i in single.items() if bank.distractor[i]}
    terms = Trust(1.0, 2, dict(zip(names, check.value.tolist())), max_absence_r=a.max_absence_r,
                  spread=dict(zip(names, check.spread.tolist())), min_spread=a.min_spread,
                  decisive={names[j]: v for j, v in decisive.value.items() if names[j] not in free},
                  min_decisive=a.min_decisive)
    analysed = set(trust.absence_r) if trust else set()
    flagged = set(trust.unseen_concepts) if trust else set()
    return sorted(t for t in names if (t in flagged if t in analysed else not terms.sees(t)))


def sentence_table(cfg: Config, bank: SentenceBank, described: list, retrieval, data: Rows,
                   unknown: set[str] = frozenset()) -> pa.Table:
    """Every method's ranked sentences of every cluster, the first ``top_k`` validated (BH over every distinct
    sentence tested), the best validated one of each cluster and method that names no ``unknown`` term marked
    shown."""
    ex = cfg.explain
    tested = np.array(sorted({int(s) for d in described for m in METHODS for s in d.ranked[m][:ex.top_k]}), np.int64)
    check = validate_sentences(data, bank, retrieval, tested, ex.alpha)
    at = {s: i for i, s in enumerate(tested.tolist())}
    records = []
    for d in described:
        for m in METHODS:
            top = [int(s) for s in d.ranked[m][:ex.top_k]]
            first = next((s for s in top if check["validated"][at[s]] and not names_unknown(bank.terms[s], unknown)),
                         None)
            for r, (s, score) in enumerate(zip(d.ranked[m], d.scores[m]), 1):
                i = at.get(int(s)) if r <= ex.top_k else None
                tested_here = i is not None
                records.append({
                    "cluster": d.cluster, "method": m, "rank": r, "sentence": bank.texts[s], "object": bank.objects[s],
                    "terms": list(bank.terms[s]), "distractor": bool(bank.distractor[s]), "score": float(score),
                    "similarity": float(d.similarity[s]), "retrieved": int(retrieval.retrieved[s]),
                    "error_rate": float(retrieval.rate[s]), "rest_error_rate": float(retrieval.rest_rate[s]),
                    **{k: float(check[k][i]) if tested_here else None for k in ("low", "high", "q")},
                    "validated": bool(check["validated"][i]) if tested_here else None,
                    "shown": int(s) == first and r <= ex.top_k, "default": m == ex.method})
    return pa.Table.from_pylist(records)


def cluster_summaries(described: list, data: Rows, predicted: np.ndarray, table: pa.Table) -> list[dict]:
    """Per cluster: its size, its most frequent (true -> predicted) pairs and the shown sentences, best first."""
    shown = [s for s in table.filter(table["shown"]).to_pylist() if s["default"]]
    out = []
    for d in described:
        members = data.cluster == d.cluster
        pairs = Counter(zip(data.classes[members].tolist(), predicted[members].tolist())).most_common(3)
        out.append({"cluster": d.cluster, "failures": int(members.sum()), "pick_rows": d.rows,
                    "contrasted_with_all": d.contrast_missing,
                    "pairs": [{"true": t, "predicted": p, "rows": n} for (t, p), n in pairs],
                    "sentences": [{k: s[k] for k in ("sentence", "score", "error_rate", "low", "high",
                                                     "rest_error_rate", "q")}
                                  for s in shown if s["cluster"] == d.cluster]})
    return out


def metrics_of(summary: dict, table: pa.Table) -> dict:
    shown = table.filter(pc.and_(table["shown"], table["default"]))
    described = len(summary["clusters"])
    return {"sentences": summary["sentences"], "clusters": described, "reference_size": summary["reference_size"],
            "clusters_with_failure_mode": sum(bool(c["sentences"]) for c in summary["clusters"]),
            "shown": shown.num_rows, "shown_distractors": int(sum(shown["distractor"].to_pylist())),
            "methods": summary["metrics"], "sweep": summary["sweep"]}


def report(summary: dict) -> str:
    lines = [f"{summary['failures']} failures, {len(summary['clusters'])} clusters described ({summary['source']}); "
             f"{summary['sentences']} sentences; method {summary['method']}, picked on {summary['pick_rows']} rows, "
             f"validated on {summary['validate_rows']}:"]
    for c in summary["clusters"]:
        pairs = ", ".join(f"{p['true']}->{p['predicted']} {p['rows']}" for p in c["pairs"])
        lines.append(f"  cluster {c['cluster']} ({c['failures']} failures: {pairs}):")
        if summary.get("withheld"):
            lines.append("    sentences withheld: the VLM is not trusted on these classes")
        elif not c["sentences"]:
            lines.append("    no sentence validated: this cluster's failure mode is not in the bank's words")
        for s in c["sentences"][:3]:
            lines.append(f"    \"{s['sentence']}\": {s['error_rate']:.0%} wrong [{s['low']:.0%}, {s['high']:.0%}] vs "
                         f"{s['rest_error_rate']:.0%} for the rest (q={s['q']:.1g})")
    k = max(int(x[1:]) for x in next(iter(summary["metrics"].values())))
    lines.append(f"metrics at k={k} sentences per cluster (S*_beta: {summary['reference_size']} sentences):")
    for m, v in summary["metrics"].items():
        values = v[f"k{k}"]
        lines.append(f"  {m:<8}" + "  ".join(f"{name.upper()} {'-' if x is None else f'{x:.2f}'}"
                                              for name, x in values.items()))
    if summary.get("withheld"):
        lines.insert(1, f"warning: {summary['withheld']}")
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    cfg = run_inputs(cfg)
    check_settings(cfg)  # before MLflow: a typo costs nothing
    with mlflow_run(cfg, "explain"):
        summary = explain(cfg)
        out = command_dir(cfg.run, "explain")
        metrics = json.loads((out / "metrics.json").read_text())
        log_child_runs([{"name": f"{cfg.run.name}/explain/{m}", "params": {"method": m},
                         "metrics": {"by_k": metrics["methods"][m],
                                     "by_clusters": {n: v[m] for n, v in metrics["sweep"].items()}}}
                        for m in METHODS])
        log_results({k: v for k, v in metrics.items() if k not in ("methods", "sweep")}, out / "metrics.json",
                    out / "summary.json", out / "sentences.parquet", out / "hard.parquet", out / "figures")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("explain", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
