"""Cost of `conceptlens explain`: embedding the sentence bank, and scoring it for one cluster.

(1) Embedding the bundled ConceptWorld bank (9,009 sentences for the demo's 10 classes; 4,455 go through the text
    tower, the negations are composed from them) with a run's VLM (``--run``, a folder `conceptlens demo` wrote):
    the baseline is one sentence per call, as a plain loop over prompts would do it (timed on the first
    ``--baseline`` sentences and scaled), against ``embed_bank``'s batches of ``--batch`` (512), and against the
    Ray Data actor pool of the job (``map_texts``, ``embed.actors`` actors) on a fresh local Ray, ``ray.init``
    timed apart. All in this process, same VLM, same threads.
(2) Scoring one cluster: all four methods (``score_all``: TopS, SetDiff, PDiff, FPDiff with its term-gain test over
    ~17,000 (sentence, parent) pairs) for a synthetic cluster of ``--hard`` rows against ``--easy`` rows.

    .venv/bin/python benchmarks/explain.py --run runs/demo
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from conceptlens.config import EmbedConfig, RayConfig
from conceptlens.language import (Contrast, Vocabulary, build_bank, compose_negations, embed_bank, near_easy_clusters,
                                  score_all)
from conceptlens.models import ModelSpec, TextEmbedder
from conceptlens.world import CLASSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder with world/models.json (e.g. runs/demo)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--baseline", type=int, default=300, help="sentences timed one by one")
    parser.add_argument("--hard", type=int, default=150)
    parser.add_argument("--easy", type=int, default=1000)
    args = parser.parse_args()
    vlm = json.loads((Path(args.run) / "world" / "models.json").read_text())["vlm"]
    spec = ModelSpec("resnet18", None, "fc", 10, "conceptworld-tiny", vlm)
    bank = build_bank(Vocabulary.load(), list(CLASSES))
    plain = bank.plain()
    encoder = TextEmbedder(spec, "cpu")
    encoder.encode(["warm up"])

    start = time.perf_counter()
    for i in plain[:args.baseline]:
        encoder.encode([bank.texts[i]])
    one_by_one = (time.perf_counter() - start) / args.baseline * len(plain)
    start = time.perf_counter()
    embeddings = embed_bank(bank, encoder.encode, args.batch)
    batched = time.perf_counter() - start

    from conceptlens.pipeline.raydata import init_ray, map_texts
    import functools
    import ray

    start = time.perf_counter()
    init_ray(RayConfig())
    ray_start = time.perf_counter() - start
    start = time.perf_counter()
    out = np.zeros_like(embeddings)
    for batch in map_texts([bank.texts[i] for i in plain], functools.partial(TextEmbedder, spec, "cpu"), EmbedConfig(),
                           batch_size=args.batch):
        out[np.asarray(plain)[batch["index"]]] = batch["text_embedding"]
    on_ray = time.perf_counter() - start
    compose_negations(bank, out)
    ray.shutdown()
    same = float(np.abs(out - embeddings).max())

    print(f"bank: {len(bank)} sentences, {len(plain)} embedded, {len(bank) - len(plain)} negations composed")
    print(f"{'how':<34}{'seconds':>9}{'sentences/s':>13}{'vs one by one':>15}")
    for how, seconds in ((f"one by one (from {args.baseline})", one_by_one), (f"embed_bank, batches of {args.batch}",
                                                                             batched),
                         (f"Ray Data pool (ray.init {ray_start:.1f} s apart)", on_ray)):
        print(f"{how:<34}{seconds:>9.1f}{len(plain) / seconds:>13.0f}{one_by_one / seconds:>14.1f}x")
    print(f"largest difference, Ray vs in-process embeddings: {same:.2e}")

    rng = np.random.default_rng(0)
    sims = np.clip(rng.normal(0.3, 0.05, (args.hard + args.easy, len(bank))), -1, 1).astype(np.float32)
    contrast = Contrast(sims[:args.hard], sims[args.hard:], np.full(args.easy, 1 / args.easy))
    near = near_easy_clusters(embeddings[:200], embeddings, 10, 50)
    start = time.perf_counter()
    score_all(contrast, bank, allowed={"star"}, near_easy=near, min_gain=3.0, min_lift=0.1)
    print(f"scoring one cluster ({args.hard} hard vs {args.easy} easy rows, all four methods): "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
