"""Decode images and embed them with the classifier and the VLM: the rows of the embeddings table.

Plain functions on NumPy batches (``dict[str, np.ndarray]``), so Ray Data, a plain loop
and the serve endpoint all call the same code.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from conceptlens.models.classifier import build_classifier
from conceptlens.models.preprocess import DEFAULT
from conceptlens.models.vlm import build_vlm
from conceptlens.models.device import resolve_device

VECTOR_COLUMNS = ("logits", "features", "vlm_embedding")


def decode_image(path: str, size: int) -> tuple[np.ndarray, Optional[str]]:
    """``uint8 (size, size, 3)`` RGB, resized when needed, and ``None``; or zeros and why it failed."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img), None
    except Exception as err:  # any unreadable file is a reject, never a crash
        return np.zeros((size, size, 3), np.uint8), f"{type(err).__name__}: {err}"[:300]


def decode_batch(batch: dict[str, np.ndarray], image_size: int) -> dict[str, np.ndarray]:
    """Adds ``image`` ``uint8 (N, size, size, 3)`` and ``error`` (``""`` when the image decoded)."""
    decoded = [decode_image(p, image_size) for p in batch["path"]]
    batch["image"] = np.stack([d[0] for d in decoded])
    batch["error"] = np.array([d[1] or "" for d in decoded], dtype=object)
    return batch


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's SHA-256 (remembered per path, size and modification time)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()[:16]
    return _DIGESTS[key]


def _identity(value: Optional[str]) -> Optional[str]:
    """A checkpoint or config file by its content, anything else (a tag such as ``openai``) as it is."""
    return f"sha256:{file_digest(value)}" if value and Path(value).is_file() else value


@dataclass(frozen=True)
class ModelSpec:
    """What an embedding worker needs to build its models (picklable, paths not weights)."""
    classifier_arch: str
    classifier_checkpoint: Optional[str]
    classifier_head: str
    num_classes: int
    vlm_arch: str
    vlm_pretrained: Optional[str]
    vlm_model_config: Optional[str] = None
    classifier_weights: Optional[str] = None
    classifier_preprocess: str = DEFAULT  # conceptlens.models.preprocess specs
    vlm_preprocess: Optional[str] = None  # None = the mean/std of open_clip's config

    def fingerprint(self) -> dict[str, str]:
        """``{"classifier": h, "vlm": h}``: short hashes of what each model is (architecture, split, weights by
        content, a preprocessing other than the default), the same wherever the files lie, different as soon as
        a weight changes."""
        clf = [self.classifier_arch, self.classifier_head, self.num_classes, self.classifier_weights,
               _identity(self.classifier_checkpoint)]
        vlm = [self.vlm_arch, _identity(self.vlm_pretrained), _identity(self.vlm_model_config)]
        clf += [self.classifier_preprocess] if self.classifier_preprocess != DEFAULT else []
        vlm += [self.vlm_preprocess] if self.vlm_preprocess else []
        return {name: hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
                for name, parts in (("classifier", clf), ("vlm", vlm))}

    def classifier(self):
        """The classifier this spec names, built (and its checkpoint loaded) on the CPU."""
        return build_classifier(self.classifier_arch, num_classes=self.num_classes, head=self.classifier_head,
                                weights=self.classifier_weights, checkpoint=self.classifier_checkpoint,
                                preprocess=self.classifier_preprocess)

    def vlm(self):
        """The VLM this spec names, built on the CPU."""
        return build_vlm(self.vlm_arch, pretrained=self.vlm_pretrained, model_config=self.vlm_model_config,
                         preprocess=self.vlm_preprocess)


class Embedder:
    """Classifier and VLM outputs for a batch of decoded images.

    ``__call__(batch)`` adds ``prediction`` (int64), ``confidence`` (float32 max softmax),
    ``logits`` (float32, K), ``features`` (float32, D encoder features) and ``vlm_embedding``
    (float32, E, L2-normalised), and drops ``image``.

    The weights are channels-last, the layout of the input made from ``(N, H, W, 3)`` images: on CPU the
    convolutions then cost about 35 % less at batch 1 and 10 % less at batch 16 (benchmarks/serve_load.py),
    with the same answers.

    ``vlm=False`` builds the classifier alone (``self.vlm`` is None) and leaves ``vlm_embedding`` out: what a
    filter of ``concepts_from`` aligned needs.
    """

    def __init__(self, spec: ModelSpec, device: str = "auto", *, vlm: bool = True):
        self.device = resolve_device(device)
        self.classifier = spec.classifier().to(self.device).eval().to(memory_format=torch.channels_last)
        self.vlm = spec.vlm().to(self.device).eval().to(memory_format=torch.channels_last) if vlm else None

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images``: ``uint8 (N, H, W, 3)`` -> the model columns (no ``vlm_embedding`` without a VLM)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        features = self.classifier.features(x)
        logits = self.classifier.head(features)
        confidence, prediction = logits.softmax(-1).max(-1)
        out = {"prediction": prediction.cpu().numpy(), "confidence": confidence.cpu().numpy(),
               "logits": logits.cpu().numpy(), "features": features.cpu().numpy()}
        if self.vlm is not None:
            out["vlm_embedding"] = self.vlm.encode_images(x).cpu().numpy()
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k != "image"}
        return out | self.embed(batch["image"])


class TextEmbedder:
    """The VLM's text tower on a batch: ``__call__({"text": (N,) str, ...})`` adds ``text_embedding`` (float32, E,
    L2-normalised); :meth:`encode` takes a list of texts."""

    def __init__(self, spec: ModelSpec, device: str = "auto"):
        self.device = resolve_device(device)
        self.vlm = spec.vlm().to(self.device).eval()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        return self.vlm.encode_texts(texts).cpu().numpy()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch | {"text_embedding": self.encode([str(t) for t in batch["text"]])}
