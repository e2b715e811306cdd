"""The preflight: a few hundred labelled rows through the models before any heavy work starts.

What breaks silently on a user's own model and data is caught here, each in one line: a checkpoint that does
not fit the config (the shapes and the key to set), a classifier near chance because its inputs are
preprocessed otherwise than it was trained (its accuracy under each common preprocessing and the setting that
fixes it), a class order that looks permuted (the order to set), a VLM that does not know the classes, and
images that cannot be read (named). It reads labels and images only: no ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch
from scipy.optimize import linear_sum_assignment

from conceptlens.config import Config
from conceptlens.models.concepts import load_concepts
from conceptlens.models.embedding import ModelSpec, decode_batch
from conceptlens.models.preprocess import PRESETS, input_transform
from conceptlens.pipeline.runs import log, model_spec
from conceptlens.pipeline.stats import skill

COMMON = tuple(PRESETS)  # the preprocessings tried when the configured one looks wrong
BATCH = 64


class PreflightFailed(ValueError):
    """The models and data do not go together; the message names the cause and the setting that fixes it."""


@dataclass
class Preflight:
    """What the preflight measured on ``rows`` labelled rows (``unreadable``: ``(id, path, error)`` of those that
    could not be decoded)."""
    rows: int
    classes: list[str]
    preprocess: str
    accuracy: float
    by_preprocess: dict[str, float] = field(default_factory=dict)
    vlm_zero_shot: float | None = None
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # stop: each names its fix
    warnings: list[str] = field(default_factory=list)  # go on, said aloud

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "classes": self.classes, "preprocess": self.preprocess, "accuracy": self.accuracy,
                "chance": self.chance, "accuracy_by_preprocess": self.by_preprocess,
                "vlm_zero_shot": self.vlm_zero_shot,
                "unreadable": [{"id": i, "path": p, "error": e} for i, p, e in self.unreadable],
                "problems": self.problems, "warnings": self.warnings}


def sample(table: pa.Table, rows: int, seed: int = 0) -> pa.Table:
    """A seeded sample of at most ``rows`` rows of ``table`` (all when it has fewer)."""
    if table.num_rows <= rows:
        return table
    picked = np.sort(np.random.default_rng(seed).choice(table.num_rows, rows, replace=False))
    return table.take(pa.array(picked))


def decode(table: pa.Table, image_size: int) -> tuple[torch.Tensor, np.ndarray, list[tuple[str, str, str]]]:
    """The readable images of ``table`` as float ``(N, 3, S, S)`` in [0, 1] (the decode path of ``embed``), their
    labels, and ``(id, path, error)`` of each image that could not be read."""
    batch = decode_batch({"path": np.asarray(table.column("path").to_pylist(), dtype=object)}, image_size)
    ok = batch["error"] == ""
    ids, paths = table.column("id").to_pylist(), table.column("path").to_pylist()
    unreadable = [(ids[i], paths[i], batch["error"][i]) for i in np.flatnonzero(~ok)]
    images = torch.from_numpy(batch["image"][ok]).permute(0, 3, 1, 2).float().div(255)
    return images, np.asarray(table.column("label_index").to_pylist())[ok], unreadable


@torch.no_grad()
def _predict(model, images: torch.Tensor) -> np.ndarray:
    return torch.cat([model(images[i:i + BATCH]).argmax(1) for i in range(0, len(images), BATCH)]).numpy()


def preflight(spec: ModelSpec, table: pa.Table, classes: list[str], *, image_size: int, rows: int = 256,
              min_gain: float = 0.2, min_skill: float = 0.25, vlm_min_skill: float = 0.2,
              class_bank=None) -> Preflight:
    """Run ``rows`` sampled labelled rows of ``table`` through the classifier of ``spec`` (and the VLM, when
    ``class_bank(vlm, classes)`` gives its zero-shot class embeddings ``(K, E)``).

    A problem (the run stops) is a fix the data shows: another common preprocessing, or a permuted class order,
    lifting accuracy by at least ``min_gain`` to a skill over chance of at least ``2 * min_skill`` (so a reshuffled
    guess of a model near chance is not taken for a fix). Accuracy under ``min_skill`` over chance with no such fix,
    a VLM under ``vlm_min_skill`` and unreadable images are warnings. A checkpoint that does not fit raises at once.
    """
    clf = spec.classifier()  # a CheckpointMismatch (ValueError) names the shapes and the key
    images, labels, unreadable = decode(sample(table, rows), image_size)
    found = Preflight(len(labels), list(classes), spec.classifier_preprocess, float("nan"), unreadable=unreadable)
    if unreadable:
        found.warnings.append(f"{len(unreadable)} of {len(labels) + len(unreadable)} sampled images cannot be read "
                              f"and will be skipped: {', '.join(p for _, p, _ in unreadable[:3])}"
                              f"{' …' if len(unreadable) > 3 else ''}")
    if not len(labels):
        raise PreflightFailed(f"none of the {len(unreadable)} sampled images can be read "
                              f"({unreadable[0][1]}: {unreadable[0][2]})")
    predictions = _predict(clf, images)
    found.accuracy = float((predictions == labels).mean())
    found.by_preprocess[spec.classifier_preprocess] = found.accuracy
    if skill(found.accuracy, len(classes)) < min_skill + min_gain:  # low enough for another preprocessing to be why
        configured = clf.preprocess
        for name in (n for n in COMMON if n not in found.by_preprocess):
            clf.preprocess = input_transform(name)
            found.by_preprocess[name] = float((_predict(clf, images) == labels).mean())
        clf.preprocess = configured
    _diagnose(found, predictions, labels, min_gain, min_skill)
    if class_bank is not None:
        found.vlm_zero_shot = _zero_shot(spec, images, labels, class_bank, classes)
        vlm_skill = skill(found.vlm_zero_shot, len(classes))
        if vlm_skill < vlm_min_skill:
            found.warnings.append(
                f"the VLM does not know these classes: zero-shot accuracy {found.vlm_zero_shot:.2f} (chance "
                f"{found.chance:.2f}, skill {vlm_skill:.2f} < analyze.min_vlm_skill {vlm_min_skill}); findings that "
                f"rest on it will be held back. A VLM that knows the domain: vlm.arch, vlm.pretrained")
    return found


def _diagnose(found: Preflight, predictions: np.ndarray, labels: np.ndarray, min_gain: float, min_skill: float) -> None:
    """The classifier's problem (a fix: another class order or preprocessing) or its near-chance warning."""
    k, names = len(found.classes), found.classes
    best = max(found.by_preprocess, key=found.by_preprocess.get)
    tried = ", ".join(f"{n} {a:.2f}" for n, a in found.by_preprocess.items())
    ties = [n for n, a in found.by_preprocess.items() if a == found.by_preprocess[best] and n != best]
    order = _permuted_order(predictions, labels, names)
    permuted = float(np.mean([order[p] == names[t] for p, t in zip(predictions, labels)])) if order else 0.0

    def fixes(accuracy: float) -> bool:  # well above the configured accuracy and above chance: not a reshuffled guess
        return accuracy >= found.accuracy + min_gain and skill(accuracy, k) >= 2 * min_skill

    if fixes(permuted) and permuted >= found.by_preprocess[best]:
        found.problems.append(
            f"classifier accuracy {found.accuracy:.2f} on {found.rows} labelled rows, {permuted:.2f} if its outputs "
            f"follow the classes in another order: set data.classes=[{','.join(order)}]")
    elif fixes(found.by_preprocess[best]):
        found.problems.append(
            f"classifier accuracy {found.accuracy:.2f} on {found.rows} labelled rows with classifier.preprocess="
            f"{found.preprocess} (chance {found.chance:.2f}); under each preprocessing: {tried}. "
            f"Set classifier.preprocess={best}" + (f" (as good: {', '.join(ties)})" if ties else ""))
    elif skill(found.accuracy, k) < min_skill:
        found.warnings.append(
            f"classifier accuracy {found.accuracy:.2f} on {found.rows} labelled rows is near chance "
            f"({found.chance:.2f}) under every common preprocessing ({tried}) and class order: check "
            f"classifier.checkpoint, data.image_size and data.classes")


def _permuted_order(predictions: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[str] | None:
    """The class order the outputs follow when a one-to-one relabelling explains the predictions better than the
    given order (the assignment maximising agreement); None when it is the given order."""
    k = len(classes)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (labels, predictions), 1)
    true_of, output = linear_sum_assignment(-confusion)
    order = [None] * k
    for t, o in zip(true_of, output):
        order[o] = classes[t]
    return None if order == list(classes) else order


@torch.no_grad()
def _zero_shot(spec: ModelSpec, images: torch.Tensor, labels: np.ndarray, class_bank, classes) -> float:
    vlm = spec.vlm()
    text = torch.as_tensor(np.asarray(class_bank(vlm, classes)), dtype=torch.float32)
    emb = torch.cat([vlm.encode_images(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])
    return float(((emb @ text.T).argmax(1).numpy() == labels).mean())


def run_preflight(cfg: Config, table: pa.Table, classes: list[str]) -> Preflight:
    """:func:`preflight` with the run's models and settings (``check.*``); says what it found, one line each, and
    raises :class:`PreflightFailed` with the first problem (its fix in the line)."""
    concepts = load_concepts(cfg.analyze.concepts)
    found = preflight(model_spec(cfg), table, classes, image_size=cfg.data.image_size, rows=cfg.check.rows,
                      min_gain=cfg.check.min_gain, min_skill=cfg.check.min_skill,
                      vlm_min_skill=cfg.analyze.min_vlm_skill,
                      class_bank=lambda vlm, names: concepts.class_bank(vlm, names).embeddings)
    vlm = f", VLM zero-shot {found.vlm_zero_shot:.2f}" if found.vlm_zero_shot is not None else ""
    log(f"preflight: classifier accuracy {found.accuracy:.2f} on {found.rows} labelled rows (chance "
        f"{found.chance:.2f}, classifier.preprocess={found.preprocess}){vlm}")
    for line in found.warnings:
        log(f"preflight: warning: {line}")
    if found.problems:
        raise PreflightFailed(f"preflight: {found.problems[0]} (check.rows=0 skips the preflight)")
    return found
