"""A classifier as a folder (``classifier.pt`` + ``classifier.json``, what builds it) and as an MLflow pyfunc
model, so a registered version can be loaded by ``classifier.checkpoint=models:/name@alias`` or served."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from conceptlens.models.classifier import Classifier, build_classifier, save_classifier
from conceptlens.models.embedding import decode_image
from conceptlens.models.preprocess import DEFAULT

WEIGHTS, CARD = "classifier.pt", "classifier.json"


def write_classifier_folder(folder: str | Path, clf: Classifier, card: dict) -> Path:
    """Write ``clf``'s weights and ``card`` (``arch``, ``head``, ``num_classes``, ``image_size``, lineage…)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_classifier(clf, folder / WEIGHTS)
    (folder / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
    return folder


def classifier_weights(folder: str | Path) -> Path:
    """The weights file inside a classifier folder (searched below it: MLflow nests artifacts)."""
    found = sorted(Path(folder).rglob(WEIGHTS))
    if not found:
        raise FileNotFoundError(f"{folder} holds no classifier ({WEIGHTS})")
    return found[0]


class ClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` takes rows with an image ``path`` and returns ``prediction`` and
    ``confidence`` (the max softmax)."""

    def load_context(self, context) -> None:
        weights = classifier_weights(context.artifacts["bundle"])
        self.card = json.loads((weights.parent / CARD).read_text())
        self.model = build_classifier(self.card["arch"], num_classes=self.card["num_classes"],
                                      head=self.card["head"], checkpoint=weights,
                                      preprocess=self.card.get("preprocess") or DEFAULT)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        images = [decode_image(p, self.card["image_size"]) for p in model_input["path"]]
        bad = [str(p) for p, (_, err) in zip(model_input["path"], images) if err]
        if bad:
            raise ValueError(f"cannot read image(s) {bad[:3]}")
        x = torch.from_numpy(np.stack([img for img, _ in images])).permute(0, 3, 1, 2).float().div(255)
        with torch.no_grad():
            confidence, prediction = self.model(x).softmax(-1).max(-1)
        return pd.DataFrame({"prediction": prediction.numpy(), "confidence": confidence.numpy()})
