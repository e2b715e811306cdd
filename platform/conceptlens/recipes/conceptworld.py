"""ConceptWorld and its two models, built once per config and cached by config hash.

``{cache_dir}/worlds/<hash>/`` holds a world (images + manifest); ``{cache_dir}/models/``
holds ``classifier-<hash>.pt`` and ``vlm-<hash>.pt`` with a ``.json`` of how they were
trained. Everything is written to a temporary name and renamed when complete, so an
interrupted build is redone, never half-used.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from conceptlens.config import Config, config_hash
from conceptlens.models import build_classifier, build_vlm, save_classifier, save_vlm
from conceptlens.recipes.data import load_images
from conceptlens.recipes.train_classifier import predict, slice_accuracies, train_classifier
from conceptlens.recipes.train_clip import evaluate_clip, train_clip
from conceptlens.world import ATTRIBUTE_GROUPS, Scenario, generate_world, read_manifest

Log = Callable[[str], None]
# Bumped whenever generation or scenario semantics change, so cached worlds and classifiers are rebuilt.
WORLD_VERSION = {"world_version": 2}
# Bumped whenever a training recipe changes, so cached models are retrained.
RECIPE_VERSION = {"recipe_version": 2}


def scenarios_of(cfg: Config) -> list[Scenario]:
    return [Scenario(s.name, s.kind, tuple(s.classes), s.attribute, s.strength, s.rate) for s in cfg.world.scenarios]


def ensure_world(cfg: Config, log: Log = print) -> Path:
    """The folder of the world ``cfg.world`` describes, generated if not cached."""
    root = Path(cfg.run.cache_dir) / "worlds" / config_hash(cfg.world, WORLD_VERSION)
    if (root / "manifest.parquet").is_file():
        log(f"world: reusing {root}")
        return root
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    step = max(sum(cfg.world.splits.values()) // 10, 1)

    def progress(done: int, total: int) -> None:
        if done % step < 500 or done == total:
            log(f"world: {done}/{total} images")

    generate_world(tmp, seed=cfg.world.seed, image_size=cfg.world.image_size, split_sizes=dict(cfg.world.splits),
                   scenarios=scenarios_of(cfg), workers=cfg.run.workers or None, progress=progress)
    try:
        tmp.rename(root)
    except OSError:  # another process finished the same world first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"world: wrote {sum(cfg.world.splits.values())} images to {root}")
    return root


def split_arrays(manifest: pa.Table, split: str) -> dict:
    """Images and ground truth of one split: ``images`` uint8 (N,3,H,W), ``labels`` (N,),
    ``attributes`` {group: value index (N,)}, ``scenarios`` object (N,)."""
    t = manifest.filter(pc.equal(manifest["split"], split))
    return {
        "images": load_images(t.column("path").to_pylist()),
        "labels": np.asarray(t.column("label_index").to_pylist()),
        "attributes": {g.name: np.array([g.values.index(v) for v in t.column(g.name).to_pylist()])
                       for g in ATTRIBUTE_GROUPS},
        "scenarios": np.array(t.column("scenario").to_pylist(), dtype=object),
    }


def _cached(path: Path, train: Callable[[Path], dict], log: Log, what: str) -> Path:
    if path.is_file():
        log(f"{what}: reusing {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    info = train(tmp)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    tmp.rename(path)
    log(f"{what}: saved {path}")
    return path


def ensure_classifier(cfg: Config, world: Path, device: torch.device, log: Log = print) -> Path:
    """A checkpoint of ``cfg.classifier`` trained on the world's ``train`` split (cached)."""
    if cfg.classifier.checkpoint:
        return Path(cfg.classifier.checkpoint)
    key = config_hash(cfg.world, WORLD_VERSION, RECIPE_VERSION, cfg.classifier)
    path = Path(cfg.run.cache_dir) / "models" / f"classifier-{key}.pt"

    def train(tmp: Path) -> dict:
        data = split_arrays(read_manifest(world), "train")
        torch.manual_seed(cfg.world.seed)  # the initial weights too: the same config trains the same model
        clf = build_classifier(cfg.classifier.arch, num_classes=cfg.classifier.num_classes,
                               head=cfg.classifier.head, weights=cfg.classifier.weights)
        log(f"classifier: training {cfg.classifier.arch} on {len(data['labels'])} images ({device})")
        info = train_classifier(clf, data["images"], torch.as_tensor(data["labels"]), cfg.classifier.train,
                                device=device, seed=cfg.world.seed, log=log)
        save_classifier(clf.cpu(), tmp)
        return info

    return _cached(path, train, log, "classifier")


def ensure_vlm(cfg: Config, world: Path, device: torch.device, log: Log = print) -> Path | str | None:
    """Pretrained weights if configured, else a tiny CLIP trained on the world's ``vlm`` split (cached)."""
    if cfg.vlm.pretrained:
        return cfg.vlm.pretrained
    # scenarios bend only the classifier's split: the vlm split, and so the VLM, depend on these alone
    vlm_split = {"seed": cfg.world.seed, "image_size": cfg.world.image_size, "size": cfg.world.splits.get("vlm", 0)}
    path = Path(cfg.run.cache_dir) / "models" / f"vlm-{config_hash(vlm_split, RECIPE_VERSION, cfg.vlm)}.pt"

    def train(tmp: Path) -> dict:
        data = split_arrays(read_manifest(world), "vlm")
        torch.manual_seed(cfg.world.seed)
        vlm = build_vlm(cfg.vlm.arch, model_config=cfg.vlm.model_config)
        log(f"tiny CLIP: training {cfg.vlm.arch} on {len(data['labels'])} captioned images ({device})")
        info = train_clip(vlm, data["images"], data["labels"], data["attributes"], cfg.vlm,
                          device=device, seed=cfg.world.seed, log=log)
        save_vlm(vlm.cpu(), tmp)
        return info

    return _cached(path, train, log, "tiny CLIP")


def evaluate_models(cfg: Config, world: Path, classifier: Path, vlm: Path | str | None,
                    device: torch.device, split: str = "test") -> dict:
    """How the world's models do on ``split``: the classifier per planted slice, the VLM per attribute."""
    data = split_arrays(read_manifest(world), split)
    clf = build_classifier(cfg.classifier.arch, num_classes=cfg.classifier.num_classes,
                           head=cfg.classifier.head, checkpoint=str(classifier))
    pred, _ = predict(clf, data["images"], device=device)
    scenarios = scenarios_of(cfg)
    classifier_metrics = slice_accuracies(pred == data["labels"], data["scenarios"], [s.name for s in scenarios])
    model = build_vlm(cfg.vlm.arch, pretrained=str(vlm) if vlm else None, model_config=cfg.vlm.model_config)
    vlm_metrics = evaluate_clip(model, data["images"], data["labels"], data["attributes"], device=device)
    planted = sorted({s.attribute.replace("=", "_") for s in scenarios})
    vlm_metrics["planted_attribute_auroc_min"] = min(vlm_metrics["attribute_auroc"][a] for a in planted)
    return {"split": split, "classifier": classifier_metrics, "vlm": vlm_metrics}
