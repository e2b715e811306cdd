"""conceptlens attack: adversarial versions of held-out images (torchattacks), embedded like any other rows.

For a seeded sample of ``attack.rows_per_split`` rows of each of ``attack.splits``, every
attack in ``attack.attacks`` at every budget in ``attack.epsilons`` (L∞, in 1/255) runs in a
Ray Data actor pool against the classifier. The adversarial images are stored as PNG (what a
deployed model would receive), listed in ``<run>/attack/adversarial.parquet`` (tagged with
``attack``, ``epsilon`` and ``source_id``) and embedded into ``<run>/attack/embeddings/``.
Success rates (share of correctly classified inputs whose prediction flipped) go to
``metrics.json`` and MLflow. A re-run with the same settings reuses the finished images and embedding
shards; changed settings (attacks, budgets, sample, image size, models, input rows) recompute them.
"""
from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from conceptlens.cli import run_command
from conceptlens.config import Config
from conceptlens.jobs.embed import embed_rows, load_input
from conceptlens.pipeline.raydata import init_ray, map_images
from conceptlens.runtime import Attacker
from conceptlens.pipeline.runs import Progress, command_dir, log, model_spec, run_inputs, write_metrics
from conceptlens.pipeline.shards import batch_to_table, changes, rows_digest, write_atomic
from conceptlens.pipeline.tracking import log_results, mlflow_run


def sample(table: pa.Table, splits: list[str], rows_per_split: int, seed: int) -> pa.Table:
    """A seeded sample of ``rows_per_split`` rows of each split (all rows when 0), in input order."""
    rng = np.random.default_rng(seed)
    picked = []
    for split in splits:
        index = np.flatnonzero(pc.equal(table["split"], split).to_numpy(zero_copy_only=False))
        if rows_per_split and len(index) > rows_per_split:
            index = np.sort(rng.choice(index, rows_per_split, replace=False))
        picked.append(index)
    index = np.concatenate(picked)
    if not len(index):
        raise ValueError(f"no rows of splits {splits} to attack (attack.splits)")
    return table.take(pa.array(index))


SETTINGS_KEY = b"conceptlens.attack"  # adversarial.parquet's schema metadata: the settings that made it


def settings(cfg: Config, source: pa.Table) -> dict:
    """What decides the adversarial set and its embeddings: the attack settings, the image size, the models
    (by content) and the rows the sample is drawn from."""
    a = cfg.attack
    return {"attack.attacks": list(a.attacks), "attack.epsilons": [float(e) for e in a.epsilons],
            "attack.steps": a.steps, "attack.splits": list(a.splits), "attack.rows_per_split": a.rows_per_split,
            "attack.seed": a.seed, "attack.precision": a.precision, "data.image_size": cfg.data.image_size, **model_spec(cfg).fingerprint(),
            "rows": rows_digest(source)}


def generate(cfg: Config, out: Path) -> pa.Table:
    """Attack the sampled rows; write the PNGs and the manifest ``adversarial.parquet``, which records the
    :func:`settings` that made it. A manifest made with the same settings is reused; otherwise it, its
    images and its embeddings are removed and everything is recomputed."""
    source = load_input(cfg)
    manifest, wanted = out / "adversarial.parquet", settings(cfg, source)
    if manifest.is_file():
        made_with = json.loads((pq.read_schema(manifest).metadata or {}).get(SETTINGS_KEY, b"{}"))
        differ = changes(made_with, wanted) if made_with else ["its settings were not recorded"]
        if not differ:
            log(f"attack: reusing {manifest}")
            return pq.read_table(manifest)
        log(f"attack: {manifest} was made with other settings ({'; '.join(differ)}); recomputing")
        manifest.unlink()  # first: a half-cleaned folder is never reused
    for stale in ("embeddings", "rejects", "images"):  # nothing made from another adversarial set survives
        shutil.rmtree(out / stale, ignore_errors=True)
    rows = sample(source, list(cfg.attack.splits), cfg.attack.rows_per_split, cfg.attack.seed)
    configs = [(a, float(e)) for a in cfg.attack.attacks for e in cfg.attack.epsilons]
    log(f"attack: {rows.num_rows} inputs × {len(configs)} attacks ({', '.join(cfg.attack.attacks)} at "
        f"ε = {', '.join(f'{e:g}' for e in cfg.attack.epsilons)}/255)")
    init_ray(cfg.ray)
    tables: list[pa.Table] = []
    attacker = functools.partial(Attacker.for_spec, model_spec(cfg), configs, steps=cfg.attack.steps,
                                 seed=cfg.attack.seed, device=cfg.run.device, precision=cfg.attack.precision)
    with Progress("attack", rows.num_rows * len(configs)) as progress:  # speaks while a batch's attacks run, too
        for batch in map_images(rows, attacker, cfg.embed, batch_size=cfg.attack.batch_size,
                                image_size=cfg.data.image_size):
            names = [f"{i}-{a}-{e:g}" for i, a, e in zip(batch["id"], batch["attack"], batch["epsilon"])]
            paths = [out / "images" / f"{a}-{e:g}" / f"{name}.png"
                     for name, a, e in zip(names, batch["attack"], batch["epsilon"])]
            for path, image in zip(paths, batch.pop("image")):
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
            batch |= {"source_id": batch["id"], "id": np.array(names, dtype=object),
                      "path": np.array([str(p.resolve()) for p in paths], dtype=object)}
            tables.append(batch_to_table(batch, rows.schema))
            progress.update(len(names))
    table = pa.concat_tables(tables).replace_schema_metadata(
        {**(source.schema.metadata or {}), SETTINGS_KEY: json.dumps(wanted).encode()})
    write_atomic(table, manifest)  # last: marks the images complete
    return table


def success_rates(table: pa.Table) -> dict:
    """Per ``<attack>@<eps>``: inputs, the clean accuracy, the accuracy under attack and the success rate."""
    out = {}
    label = table["label_index"].to_numpy()
    clean, adv = table["clean_prediction"].to_numpy(), table["adversarial_prediction"].to_numpy()
    attack, eps = table["attack"].to_numpy(zero_copy_only=False), table["epsilon"].to_numpy()
    for a, e in sorted(set(zip(attack, eps))):
        m = (attack == a) & (eps == e)
        correct = m & (clean == label)
        out[f"{a}_eps{e:g}"] = {"n": int(m.sum()), "clean_accuracy": float((clean[m] == label[m]).mean()),
                             "adversarial_accuracy": float((adv[m] == label[m]).mean()),
                             "success_rate": float((adv[correct] != clean[correct]).mean()) if correct.any() else None}
    return out


def attack(cfg: Config) -> dict:
    out = command_dir(cfg.run, "attack")
    table = generate(cfg, out)
    embedded = embed_rows(cfg, table, out, what="attack: embed")
    metrics = {"success": success_rates(table), "rows": embedded["rows"], "rejects": embedded["rejects"],
               "embeddings": embedded["output"]}
    write_metrics(out, metrics)
    return metrics


def report(metrics: dict) -> str:
    lines = [f"{'attack':<12}{'n':>6}{'clean acc':>11}{'adv acc':>9}{'success':>9}"]
    lines += [f"{name:<12}{m['n']:>6}{m['clean_accuracy']:>11.3f}{m['adversarial_accuracy']:>9.3f}"
              f"{(m['success_rate'] or 0):>9.3f}" for name, m in metrics["success"].items()]
    return "\n".join(lines)


def run(cfg: Config) -> dict:
    cfg = run_inputs(cfg)  # the data and models `embed` used: the attacked rows keep their split and classes
    with mlflow_run(cfg, "attack"):
        metrics = attack(cfg)
        out = command_dir(cfg.run, "attack")
        log_results(metrics, out / "metrics.json", out / "adversarial.parquet", tags={"output": metrics["embeddings"]})
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("attack", __doc__, argv, run, report)


if __name__ == "__main__":
    sys.exit(main())
