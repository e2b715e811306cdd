"""How ConceptWorld's own models do against the world's truth: the classifier on each planted
slice, the VLM's zero-shot accuracy and attribute retrieval, and the checks a useful world must pass
(planted failures visible, the VLM good enough to serve as an oracle)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from conceptlens.config import Config
from conceptlens.models import build_classifier, build_vlm
from conceptlens.pipeline.runs import Progress
from conceptlens.recipes.conceptworld import scenarios_of
from conceptlens.recipes.data import load_images
from conceptlens.recipes.train_classifier import predict
from conceptlens.recipes.train_clip import embed_images
from conceptlens.world import ATTRIBUTE_GROUPS, CLASSES, Scenario, caption, split_arrays
from conceptlens.world.vocabulary import OCCLUDING

# What a useful ConceptWorld must show: planted failures visible, the VLM good enough to be an oracle.
MIN_SLICE_GAP, MIN_ZERO_SHOT, MIN_PLANTED_AUROC = 0.20, 0.80, 0.90
GAP_CHECK = "every_slice_gap_at_least_0.20"  # the check world.allow_unplanted excuses
# What to try when a scenario of a kind plants too small a gap.
PLANTING_HINTS = {
    "spurious_correlation": "raise `strength` to 1.0 and set `other_strength: 0` so other classes never carry "
                            "the value",
    "blind_spot": f"choose a condition the classifier must see through ({', '.join(sorted(OCCLUDING))}) "
                  f"or more classes",
    "rare_subgroup": "lower `rate`",
    "head_fault": "raise `strength`",
}


def is_planted(gap: float, min_gap: float = MIN_SLICE_GAP) -> bool:
    """Whether a slice's gap (NaN: the slice has no rows) shows a planted failure."""
    return math.isfinite(gap) and gap >= min_gap


def unplanted_message(slices: dict, scenarios: list[Scenario], *, split: str = "test",
                      min_gap: float = MIN_SLICE_GAP) -> str | None:
    """Why the world fails: one line per scenario whose slice gap on ``split`` is under ``min_gap``, with what
    to try for its kind; None when every scenario is planted. ``slices``: :func:`slice_accuracies`'
    ``"slices"``; ``scenarios`` in config order (each line names the scenario's key, ``world.scenarios[i]``)."""
    lines = []
    for i, s in enumerate(scenarios):
        sl = slices[s.name]
        if is_planted(sl["gap"], min_gap):
            continue
        found = f"slice gap {sl['gap']:.3f} (n={sl['n']})" if sl["n"] else "no images in its slice"
        lines.append(f"scenario {s.name!r} (world.scenarios[{i}], {s.kind}) planted no failure: {found} on "
                     f"{split}, under {min_gap:.2f}; try: {PLANTING_HINTS[s.kind]}")
    if not lines:
        return None
    return "\n".join(lines + ["(world.allow_unplanted=true reports this and goes on)"])


def slice_accuracies(correct: np.ndarray, scenarios: np.ndarray, names: list[str]) -> dict:
    """Accuracy overall, without any planted slice, and on each slice with its gap to the rest.

    ``correct``: ``bool (N,)``; ``scenarios``: object array of scenario names or ``None``.
    A slice's gap is ``accuracy(rest) - accuracy(slice)``, where the rest is every image
    outside all planted slices.
    """
    in_none = np.array([s is None for s in scenarios])
    rest = float(correct[in_none].mean()) if in_none.any() else float("nan")
    out = {"accuracy": float(correct.mean()), "accuracy_rest": rest, "n": int(len(correct)), "slices": {}}
    for name in names:
        mask = scenarios == name
        acc = float(correct[mask].mean()) if mask.any() else float("nan")
        out["slices"][name] = {"n": int(mask.sum()), "accuracy": acc, "gap": rest - acc}
    return out


@torch.no_grad()
def evaluate_clip(vlm, images: torch.Tensor, labels: np.ndarray, attributes: dict[str, np.ndarray], *,
                  device: torch.device, progress: Callable[[int], None] | None = None) -> dict:
    """Zero-shot class accuracy and per-attribute-value retrieval AUROC.

    Retrieval scores an image for a value by the softmax over its group's prompts
    ("a photo of an object on water" vs "... on grass", ...), which lifts the worst values
    over raw cosine. ``class_prompt_max_cosine`` near 1 warns that class words collapsed. ``progress`` gets the
    size of each batch of images embedded.
    """
    emb = embed_images(vlm, images, device=device, progress=progress)
    class_text = vlm.encode_texts([caption(c, {}, set()) for c in CLASSES]).cpu()
    zero_shot = (emb @ class_text.T).argmax(1).numpy() == np.asarray(labels)
    sim = class_text @ class_text.T
    out = {"zero_shot_accuracy": float(zero_shot.mean()),
           "class_prompt_max_cosine": float((sim - 2 * torch.eye(len(CLASSES))).max()),
           "attribute_auroc": {}}
    for g in ATTRIBUTE_GROUPS:
        text = vlm.encode_texts([caption(None, {g.name: v}, {g.name}) for v in g.values]).cpu()
        probs = (100 * emb @ text.T).softmax(-1).numpy()
        for j, v in enumerate(g.values):
            truth = np.asarray(attributes[g.name]) == j
            if 0 < truth.sum() < len(truth):
                out["attribute_auroc"][f"{g.name}_{v}"] = float(roc_auc_score(truth, probs[:, j]))
    return out


def evaluate_models(cfg: Config, world: Path, classifier: Path, vlm: Path | str | None,
                    device: torch.device, split: str = "test", log: Callable[[str], None] | None = None) -> dict:
    """How the world's models do on ``split``: the classifier per planted slice, the VLM per attribute,
    and ``checks`` (each planted slice's gap, the VLM's zero-shot accuracy and planted-attribute retrieval).
    Progress lines go to ``log`` (default: :func:`conceptlens.pipeline.runs.log`)."""
    data = split_arrays(world, split)
    images = load_images(data["paths"])
    clf = build_classifier(cfg.classifier.arch, num_classes=cfg.classifier.num_classes,
                           head=cfg.classifier.head, checkpoint=str(classifier))
    pred, _ = predict(clf, images, device=device,
                      progress=Progress(f"classifier on {split}", len(images), unit="images", log=log).update)
    scenarios = scenarios_of(cfg)
    classifier_metrics = slice_accuracies(pred == data["labels"], data["scenarios"], [s.name for s in scenarios])
    model = build_vlm(cfg.vlm.arch, pretrained=str(vlm) if vlm else None, model_config=cfg.vlm.model_config)
    vlm_metrics = evaluate_clip(model, images, data["labels"], data["attributes"], device=device,
                                progress=Progress(f"VLM on {split}", len(images), unit="images", log=log).update)
    planted = sorted({s.attribute.replace("=", "_") for s in scenarios})
    # a world without scenarios (a null world) has nothing planted to see: both checks hold vacuously
    vlm_metrics["planted_attribute_auroc_min"] = min((vlm_metrics["attribute_auroc"][a] for a in planted),
                                                     default=None)
    gaps = [s["gap"] for s in classifier_metrics["slices"].values()]
    checks = {
        GAP_CHECK: all(is_planted(g) for g in gaps),
        "zero_shot_at_least_0.80": vlm_metrics["zero_shot_accuracy"] >= MIN_ZERO_SHOT,
        "planted_attribute_auroc_at_least_0.90": not planted or
                                                 vlm_metrics["planted_attribute_auroc_min"] >= MIN_PLANTED_AUROC,
    }
    return {"split": split, "classifier": classifier_metrics, "vlm": vlm_metrics, "checks": checks}
