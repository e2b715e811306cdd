"""The served model without Ray: a bundle whose filter reads concepts from the aligned encoder features never
builds the VLM (its image tower never runs per request) and answers as the filter does offline; a vlm bundle
builds it. Replicas ask for CPUs that fit the machine."""
import asyncio
import json

import numpy as np
import pytest
import torch

from conceptlens.config import ServeConfig
from conceptlens.models.classifier import save_classifier
from conceptlens.models.embedding import ModelSpec
from conceptlens.models.vlm import save_vlm
from conceptlens.runtime.bundle import save_bundle
from conceptlens.runtime.filter import ConceptFilter
from conceptlens.semantic import Aligner
from conceptlens.serve.app import replica_cpus
from conceptlens.serve.model import ServedModel, judge

MICRO = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
         "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)


def bundle(tmp_path, mode: str):
    """A bundle of an untrained tiny classifier and micro CLIP with a filter of ``concepts_from`` ``mode``, fitted on
    the models' own columns; and the in-process columns of some test images."""
    config = tmp_path / "clip-micro.json"
    config.write_text(json.dumps(MICRO))
    spec = ModelSpec("test_adaptive:tiny_network", None, "fc", 3, "clip-micro", None, str(config))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        classifier, vlm = spec.classifier().eval(), spec.vlm().eval()
    save_classifier(classifier, tmp_path / "classifier.pt")
    save_vlm(vlm, tmp_path / "vlm.pt")
    spec = ModelSpec(spec.classifier_arch, str(tmp_path / "classifier.pt"), "fc", 3, "clip-micro",
                     str(tmp_path / "vlm.pt"), str(config))

    def columns(x: np.ndarray, labels: np.ndarray) -> dict:
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            features = classifier.features(t)
            logits = classifier.head(features)
            return {"label_index": labels, "prediction": logits.argmax(1).numpy(), "logits": logits.numpy(),
                    "confidence": logits.softmax(1).amax(1).numpy(), "features": features.numpy(),
                    "vlm_embedding": vlm.encode_images(t).numpy()}
    rng = np.random.default_rng(0)
    calib = columns(images(300, 0), rng.integers(0, 3, 300))  # untrained: many rows are wrong
    filt = ConceptFilter(Aligner(np.zeros((8, 16), np.float32), np.zeros(16, np.float32)), rng.normal(size=(4, 16)),
                         rng.normal(size=(3, 16)), {}, {}, list("wxyz"), list("abc"), concepts_from=mode).fit(calib)
    folder = save_bundle(filt, tmp_path / f"bundle-{mode}", spec, image_size=8, run="test")
    test = images(5, 1)
    return folder, test, columns(test, np.zeros(5, np.int64))


def served(model: ServedModel, x: np.ndarray, method: str = "predict") -> list[dict]:
    async def ask():
        return await asyncio.gather(*(getattr(model, method)(image) for image in x))
    return asyncio.run(ask())


def test_an_aligned_bundle_never_builds_the_vlm_and_answers_as_offline(tmp_path, monkeypatch):
    folder, x, columns = bundle(tmp_path, "aligned")

    def no_vlm(self):
        raise AssertionError("the VLM was built")
    monkeypatch.setattr(ModelSpec, "vlm", no_vlm)
    model = ServedModel(str(folder), None, "cpu")
    assert model.embedder.vlm is None
    info = model.info()
    assert info["concepts_from"] == "aligned" and info["models"]["vlm"] is None
    answers = served(model, x)
    offline = judge(ConceptFilter.load(folder), {k: v for k, v in columns.items() if k != "vlm_embedding"})
    assert [a["verdict"] for a in answers] == [a["verdict"] for a in offline]
    for a, b in zip(answers, offline):
        assert a["label"] == b["label"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    assert [a["label"] for a in served(model, x, "classify")] == [a["label"] for a in offline]


def test_a_vlm_bundle_builds_the_vlm(tmp_path):
    folder, x, columns = bundle(tmp_path, "vlm")
    model = ServedModel(str(folder), None, "cpu")
    assert model.embedder.vlm is not None and model.info()["concepts_from"] == "vlm"
    offline = judge(ConceptFilter.load(folder), columns)
    for a, b in zip(served(model, x), offline):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_replicas_ask_for_cpus_that_fit_the_machine():
    assert replica_cpus(ServeConfig(), cpus=2) == 1.0  # two replicas of one CPU on 2 cores
    assert replica_cpus(ServeConfig(), cpus=1) == 0.5
    assert replica_cpus(ServeConfig(max_replicas=4), cpus=2) == 0.5
    assert replica_cpus(ServeConfig(max_replicas=2), cpus=64) == 1.0
    assert replica_cpus(ServeConfig(num_cpus=0.25), cpus=64) == 0.25  # set = as given
