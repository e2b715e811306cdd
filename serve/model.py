"""The models a replica serves, as a plain class: one bundle's classifier (and VLM, only when its filter reads the
VLM image embedding), the :class:`~conceptlens.runtime.filter.ConceptFilter` and its failure modes, behind two
:class:`~serve.batching.Batcher` s; and :func:`judge`, the answer of ``/predict`` from the model columns.
No Ray Serve here: :mod:`serve.deployments` wraps it."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from conceptlens.runtime.bundle import bundle_models
from conceptlens.runtime.failure_modes import FailureModes
from conceptlens.runtime.filter import HEADS, ConceptFilter
from conceptlens.runtime.registered import fetch_bundle
from conceptlens.serve.batching import Batcher

logger = logging.getLogger("ray.serve")

USER_CONFIG_KEYS = ("thresholds", "top_concepts", "max_batch_size", "batch_wait_timeout_s")


def judge(filt: ConceptFilter, columns: dict, *, thresholds: dict | None = None, top: int = 3,
          modes: FailureModes | None = None) -> list[dict]:
    """Per input the answer of ``/predict`` (without ``name``) from the Embedder's columns of N inputs
    (``prediction (N,)``, ``confidence (N,)``, ``logits (N, K)``, ``features (N, D)``, ``vlm_embedding (N, E)``);
    a flagged input also gets ``looks_like``, the nearest of the bundle's failure ``modes``."""
    verdicts = filt.verdicts(columns, thresholds=thresholds)
    why = filt.explain(columns, top=top)
    answers = [{"label": filt.class_names[int(p)], "confidence": float(c), "verdict": str(verdicts["verdict"][i]),
                "scores": {h: float(verdicts[h][i]) for h in HEADS if h in verdicts}, "concepts": why[i]}
               for i, (p, c) in enumerate(zip(columns["prediction"], columns["confidence"]))]
    flagged = [i for i, a in enumerate(answers) if a["verdict"] != "accept"]
    if modes is not None and flagged:
        for i, match in zip(flagged, modes.match({k: np.asarray(v)[flagged] for k, v in columns.items()})):
            answers[i]["looks_like"] = looks_like(match)
    return answers


def looks_like(match: dict) -> dict:
    """A :meth:`FailureModes.match` answer in the words of the API (:class:`LooksLike`)."""
    if match["cluster"] is None:
        text = "none close enough (no known failure mode for this label)"
    elif not match["close_enough"]:
        text = f"none close enough (nearest: failure mode {match['cluster']}, {match['distance']:.1f} radii away)"
    else:
        text = "looks like: " + (match["sentence"] or f"failure mode {match['cluster']} ("
                                 f"{', '.join(match['concepts']) or 'no concept named'})")
    return {"close_enough": match["close_enough"], "text": text, "cluster": match["cluster"],
            "distance": match["distance"], "sentence": match["sentence"], "cluster_concepts": match["concepts"]}


class ServedModel:
    """Classifier, VLM (only for a filter of ``concepts_from`` vlm: an aligned bundle never builds the VLM image
    tower) and runtime filter of one bundle (a folder or ``models:/name@alias`` in the store ``tracking_uri``);
    :meth:`predict` and :meth:`classify` take one ``uint8 (S, S, 3)`` image per call and answer one dict, in a
    batch with concurrent calls."""

    def __init__(self, bundle: str, tracking_uri: Optional[str], device: str):
        folder = fetch_bundle(bundle, tracking_uri)
        self.filter = ConceptFilter.load(folder)
        self.modes = FailureModes.load_optional(folder)  # absent from bundles made before rootcause ran
        self.spec, self.image_size = bundle_models(folder)  # the models travel inside the bundle
        from conceptlens.models.embedding import Embedder  # torch only where models run

        self.embedder = Embedder(self.spec, device, vlm=self.filter.needs_vlm)
        self.bundle = bundle
        self.thresholds, self.top = {}, 3
        self.batches = {"calls": 0, "images": 0, "largest": 0}
        self.health_checks = 0
        self.predicts = Batcher(lambda images: self._judge(np.stack(images)))
        self.labels = Batcher(lambda images: self._label(np.stack(images)))

    def reconfigure(self, config: dict) -> None:
        """``user_config``: ``thresholds`` {misclassified, adversarial} in [0, 1] (missing = the bundle's),
        ``top_concepts``, ``max_batch_size``, ``batch_wait_timeout_s``."""
        unknown = set(config) - set(USER_CONFIG_KEYS)
        thresholds = dict(config.get("thresholds") or {})
        if unknown or set(thresholds) - set(HEADS):
            raise ValueError(f"user_config takes {USER_CONFIG_KEYS} with thresholds for {HEADS}; got {config}")
        if not all(0.0 <= float(v) <= 1.0 for v in thresholds.values()):
            raise ValueError(f"thresholds must lie in [0, 1]: {thresholds}")
        self.thresholds = {k: float(v) for k, v in thresholds.items()}
        self.top = int(config.get("top_concepts", 3))
        for batcher in (self.predicts, self.labels):
            batcher.max_size = int(config.get("max_batch_size", batcher.max_size))
            batcher.wait_s = float(config.get("batch_wait_timeout_s", batcher.wait_s))
        logger.info("conceptlens: thresholds %s, %d concepts per answer", self.filter.thresholds | self.thresholds,
                    self.top)

    def info(self) -> dict:
        """What this model serves: bundle, image size, classes, the filter's ``concepts_from``, the model files it
        loaded (``vlm`` None when the VLM was not built), thresholds in force, batch counts and how often
        :meth:`healthy` was asked."""
        return {"bundle": self.bundle, "image_size": self.image_size, "classes": self.filter.class_names,
                "concepts_from": self.filter.concepts_from,
                "models": {"classifier": self.spec.classifier_checkpoint,
                           "vlm": self.spec.vlm_pretrained if self.embedder.vlm is not None else None},
                "thresholds": self.filter.thresholds | self.thresholds, "batches": dict(self.batches),
                "health_checks": self.health_checks}

    def healthy(self) -> bool:
        """``/healthz``'s probe: answering at all means the models are loaded."""
        self.health_checks += 1
        return True

    def _count(self, n: int) -> None:
        self.batches["calls"] += 1
        self.batches["images"] += n
        self.batches["largest"] = max(self.batches["largest"], n)

    def _judge(self, images: np.ndarray) -> list[dict]:
        self._count(len(images))
        return judge(self.filter, self.embedder.embed(images), thresholds=self.thresholds, top=self.top,
                     modes=self.modes)

    def _label(self, images: np.ndarray) -> list[dict]:
        import torch

        self._count(len(images))
        with torch.no_grad():
            x = torch.from_numpy(images).to(self.embedder.device).permute(0, 3, 1, 2).float().div_(255)
            confidence, prediction = self.embedder.classifier(x).softmax(-1).max(-1)
        return [{"label": self.filter.class_names[int(p)], "confidence": float(c)}
                for p, c in zip(prediction.cpu(), confidence.cpu())]

    async def predict(self, image: np.ndarray) -> dict:
        """Label, verdict, scores and concepts of one image, in a batch with concurrent calls."""
        return await self.predicts(image)

    async def classify(self, image: np.ndarray) -> dict:
        """The bare classifier's label and confidence of one image, in a batch with concurrent calls."""
        return await self.labels(image)
