"""ConceptWorld and its two models, built once per config and cached by config hash.

``{cache_dir}/worlds/<hash>/`` holds a world (images, manifest and truth); ``{cache_dir}/models/``
holds ``classifier-<hash>.pt`` and ``vlm-<hash>.pt`` with a ``.json`` of how they were
trained. Everything is written to a temporary name and renamed when complete, so an
interrupted build is redone, never half-used.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from conceptlens.config import Config, VLMRecipe, config_hash, model_key, world_key
from conceptlens.models import build_classifier, build_vlm, save_classifier, save_vlm
from conceptlens.pipeline.runs import Progress
from conceptlens.recipes.data import load_images
from conceptlens.recipes.head_fault import encoder_features, plant_head_fault
from conceptlens.recipes.train_classifier import train_classifier
from conceptlens.recipes.train_clip import train_clip
from conceptlens.world import Scenario, generate_world, split_arrays, split_truth

Log = Callable[[str], None]
# Bumped whenever generation or scenario semantics change, so cached worlds and classifiers are rebuilt.
WORLD_VERSION = {"world_version": 2}
# Bumped whenever a training recipe changes, so cached models are retrained.
RECIPE_VERSION = {"recipe_version": 3}


def scenarios_of(cfg: Config) -> list[Scenario]:
    return [Scenario.from_dict(asdict(s)) for s in cfg.world.scenarios]


def model_seed(cfg: Config) -> int:
    """The seed the world's models train with: ``world.model_seed``, else the world's own seed."""
    return cfg.world.seed if cfg.world.model_seed is None else cfg.world.model_seed


def _generate_cached(root: Path, what: str, log: Log, **generate) -> Path:
    """``generate_world(root, **generate)`` unless ``root`` holds a complete world; written under a temporary name
    and renamed when complete."""
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    drawn = Progress(f"{what}: drawn", sum(generate["split_sizes"].values()), unit="images", log=log)
    generate_world(tmp, progress=lambda done, total: drawn.update(done - drawn.done), **generate)
    try:
        tmp.rename(root)
    except OSError:  # another process finished the same world first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{what}: wrote {sum(generate['split_sizes'].values())} images to {root}")
    return root


def ensure_restyled_vlm_split(cfg: Config, log: Log = print) -> Path:
    """The world's ``vlm`` split drawn again in the ``restyled`` style (same scenes, another look): what the
    ``shifted`` observer is trained on (cached)."""
    key = {"seed": cfg.world.seed, "image_size": cfg.world.image_size, "vlm": cfg.world.splits.get("vlm", 0),
           "style": "restyled"}
    root = Path(cfg.run.cache_dir) / "worlds" / config_hash(key, WORLD_VERSION)
    if (root / "manifest.parquet").is_file():
        log(f"restyled vlm split: reusing {root}")
        return root
    return _generate_cached(root, "restyled vlm split", log, seed=cfg.world.seed, image_size=cfg.world.image_size,
                            split_sizes={"vlm": key["vlm"]}, scenarios=[], workers=cfg.run.workers or None,
                            style="restyled")


def ensure_world(cfg: Config, log: Log = print) -> Path:
    """The folder of the world ``cfg.world`` describes, generated if not cached. A cached world written before
    the truth had its own file is split in place (:func:`~conceptlens.world.split_truth`): same hash, same models."""
    images = {k: v for k, v in world_key(cfg.world).items() if k != "model_seed"}  # models only: same images
    root = Path(cfg.run.cache_dir) / "worlds" / config_hash(images, WORLD_VERSION)
    if (root / "manifest.parquet").is_file():
        split = split_truth(root)
        log(f"world: reusing {root}" + (" (moved its truth out of manifest.parquet into truth.parquet)" if split else ""))
        return root
    return _generate_cached(root, "world", log, seed=cfg.world.seed, image_size=cfg.world.image_size,
                            split_sizes=dict(cfg.world.splits), scenarios=scenarios_of(cfg),
                            workers=cfg.run.workers or None)


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
    """A checkpoint of ``cfg.classifier`` trained on the world's ``train`` split, its head then edited by the
    ``head_fault`` scenarios (cached)."""
    if cfg.classifier.checkpoint:
        return Path(cfg.classifier.checkpoint)
    key = config_hash(world_key(cfg.world), WORLD_VERSION, RECIPE_VERSION, model_key(cfg.classifier))
    path = Path(cfg.run.cache_dir) / "models" / f"classifier-{key}.pt"

    def train(tmp: Path) -> dict:
        data = split_arrays(world, "train")
        images = load_images(data["paths"])
        torch.manual_seed(model_seed(cfg))  # the initial weights too: the same config trains the same model
        clf = build_classifier(cfg.classifier.arch, num_classes=cfg.classifier.num_classes,
                               head=cfg.classifier.head, weights=cfg.classifier.weights,
                               preprocess=cfg.classifier.preprocess)
        log(f"classifier: training {cfg.classifier.arch} on {len(data['labels'])} images ({device})")
        info = train_classifier(clf, images, torch.as_tensor(data["labels"]), cfg.classifier.train,
                                device=device, seed=model_seed(cfg), log=log)
        faults = [s for s in scenarios_of(cfg) if s.kind == "head_fault"]
        if faults:
            features = encoder_features(clf, images, device=device, progress=Progress(
                "classifier: encoder features for the head faults", len(images), unit="images", log=log).update)
            info["head_faults"] = {s.name: plant_head_fault(clf, features, data["labels"], data["attributes"], s, log)
                                   for s in faults}
        save_classifier(clf.cpu(), tmp)
        return info

    return _cached(path, train, log, "classifier")


def ensure_vlm(cfg: Config, world: Path, device: torch.device, log: Log = print) -> Path | str | None:
    """Pretrained weights if configured, else a tiny CLIP trained on the world's ``vlm`` split by ``vlm.recipe``
    (cached; ``shifted`` trains on the split drawn in the restyled style)."""
    if cfg.vlm.pretrained:
        return cfg.vlm.pretrained
    # scenarios bend only the classifier's split: the vlm split, and so the VLM, depend on these alone
    vlm_split = {"seed": cfg.world.seed, "image_size": cfg.world.image_size, "size": cfg.world.splits.get("vlm", 0)}  # not a truth column: a cache key
    if cfg.world.model_seed is not None:
        vlm_split["model_seed"] = cfg.world.model_seed
    path = Path(cfg.run.cache_dir) / "models" / f"vlm-{config_hash(vlm_split, RECIPE_VERSION, model_key(cfg.vlm))}.pt"

    def train(tmp: Path) -> dict:
        source = ensure_restyled_vlm_split(cfg, log) if cfg.vlm.recipe == VLMRecipe.shifted else world
        data = split_arrays(source, "vlm")
        images = load_images(data["paths"])
        torch.manual_seed(model_seed(cfg))
        vlm = build_vlm(cfg.vlm.arch, model_config=cfg.vlm.model_config, preprocess=cfg.vlm.preprocess)
        log(f"tiny CLIP: training {cfg.vlm.arch} ({cfg.vlm.recipe.value} recipe) on {len(data['labels'])} "
            f"images ({device})")
        info = train_clip(vlm, images, data["labels"], data["attributes"], cfg.vlm,
                          device=device, seed=model_seed(cfg), log=log)
        save_vlm(vlm.cpu(), tmp)
        return info

    return _cached(path, train, log, "tiny CLIP")
