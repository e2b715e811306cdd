"""The adaptive attack on classifier + concept filter, on a synthetic image task with tiny models trained at once."""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from conceptlens.models.classifier import save_classifier
from conceptlens.models.embedding import ModelSpec
from conceptlens.models.vlm import save_vlm
from conceptlens.runtime.adaptive import SIGNAL_FUNCTIONS, AdaptiveAttacker, TorchFilter, adaptive_attack
from conceptlens.runtime.attacks import attack_images
from conceptlens.runtime.bundle import save_bundle
from conceptlens.runtime.filter import SIGNALS, ConceptFilter
from conceptlens.semantic import Aligner, unit
from filter_parity import assert_parity  # tests/filter_parity.py (tests/ is on sys.path: conftest)
from test_runtime_filter import make_filter, world

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread beats a pool contending for shared cores (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 3×8×8 images in [0, 1] with two cues: class k has a slightly brighter channel k (which
    the classifier, pooling globally, reads) and a brighter quadrant k (which only the VLM sees)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = 0.4 + 0.1 * torch.randn(n, 3, 8, 8, generator=g)
    x[torch.arange(n), labels] += 0.03
    for k in range(3):
        x[labels == k, :, 4 * (k // 2):4 * (k // 2) + 4, 4 * (k % 2):4 * (k % 2) + 4] += 0.1
    return x.clamp(0, 1), labels


class TinyClassifier(nn.Module):
    """``features`` (N, 8) and ``head`` (N, 3), as :class:`conceptlens.models.classifier.Classifier` has."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 1), nn.Linear(8, 3)

    def features(self, x):
        return torch.relu(self.conv((x - 0.5) / 0.1)).mean(dim=(2, 3))

    def head(self, features):
        return self.fc(features)

    def forward(self, x):
        return self.head(self.features(x))


class TinyVLM(nn.Module):
    """``encode_images``: unit (N, 6) embeddings of the image's quadrants, through fixed random weights."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(12, 6)

    def encode_images(self, x):
        pooled = nn.functional.avg_pool2d((x - 0.5) / 0.1, 4).flatten(1)
        return nn.functional.normalize(torch.tanh(self.proj(pooled)), dim=-1)


def columns(classifier, vlm, x, y) -> dict:
    """The model columns of a batch, as the embedding job writes them."""
    with torch.no_grad():
        features = classifier.features(x)
        logits = classifier.head(features)
        return {"label_index": y.numpy(), "prediction": logits.argmax(1).numpy(), "logits": logits.numpy(),
                "features": features.numpy(), "vlm_embedding": vlm.encode_images(x).numpy()}


@pytest.fixture(scope="module")
def setup():
    """A trained classifier, a VLM, a filter fitted on their clean and PGD outputs, and test images."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        classifier, vlm = TinyClassifier(), TinyVLM().eval()
    x, y = images(600, 0)
    opt = torch.optim.Adam(classifier.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(classifier(x), y).backward()
        opt.step()
    classifier.eval()
    opt.zero_grad(set_to_none=True)
    clean = columns(classifier, vlm, x, y)
    adv_x, adv_y = images(300, 1)
    adversarial = columns(classifier, vlm, attack_images(classifier, adv_x, adv_y, "pgd", 0.03), adv_y)
    classes = np.stack([clean["vlm_embedding"][clean["label_index"] == k].mean(0) for k in range(3)])
    concepts = np.random.default_rng(0).normal(size=(5, 6))
    filt = ConceptFilter(Aligner(np.zeros((8, 6), np.float32), np.zeros(6, np.float32)), unit(concepts), unit(classes),
                         {}, {}, [f"c{i}" for i in range(5)], ["r", "g", "b"]).fit(clean, adversarial)
    test_x, test_y = images(96, 2)
    return classifier, vlm, filt, test_x, test_y


def test_torch_filter_matches_the_numpy_filter(setup):
    classifier, vlm, filt, x, y = setup
    assert_parity(filt, columns(classifier, vlm, x, y))
    adv = attack_images(classifier, x, y, "pgd", 0.03)
    with torch.no_grad():
        assert_parity(filt, columns(classifier, vlm, adv, y), TorchFilter(filt).images(classifier, vlm, adv))
    # a filter without adversarial rows: one head, no adversarial reference
    one_head = make_filter().fit(world(600, 0))
    batch = world(200, 3)
    batch["prediction"] = batch["logits"].argmax(1)  # served predictions are the argmax of the logits
    assert_parity(one_head, batch)


def test_every_signal_has_a_torch_version_and_an_unknown_one_is_named(setup):
    assert set(SIGNALS) <= set(SIGNAL_FUNCTIONS)
    with pytest.raises(ValueError, match="brand_new"):
        TorchFilter(setup[2], signals=(*SIGNALS, "brand_new"))


def test_the_attack_stays_in_the_eps_ball_and_in_range(setup):
    classifier, vlm, filt, x, y = setup
    x = x.clone()
    x[:4, :, :2] = 0.0  # pixels at the edges of the range
    x[4:8, :, :2] = 1.0
    for eps in (2 / 255, 0.03):
        adv = adaptive_attack(classifier, vlm, filt, x, y, eps, steps=5)
        assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adaptive_attack(classifier, vlm, filt, x, y, 0.0), x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adaptive_attack(classifier, vlm, filt, x * 2, y, 0.03)


def test_the_attack_is_deterministic_and_leaves_models_and_rng_as_they_were(setup):
    classifier, vlm, filt, x, y = setup
    classifier.conv.bias.requires_grad_(False)  # a frozen parameter must stay frozen
    classifier.train()
    flags = [p.requires_grad for p in (*classifier.parameters(), *vlm.parameters())]
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = adaptive_attack(classifier, vlm, filt, x[:16], y[:16], 0.03, steps=4, seed=7)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random stream is untouched
    b = adaptive_attack(classifier, vlm, filt, x[:16], y[:16], 0.03, steps=4, seed=7)
    c = adaptive_attack(classifier, vlm, filt, x[:16], y[:16], 0.03, steps=4, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert classifier.training and not vlm.training
    assert [p.requires_grad for p in (*classifier.parameters(), *vlm.parameters())] == flags
    assert all(p.grad is None for p in (*classifier.parameters(), *vlm.parameters()))
    classifier.conv.bias.requires_grad_(True)
    classifier.eval()


def test_the_filter_term_evades_the_filter_better_than_plain_pgd(setup):
    """The filter catches PGD on the classifier (the VLM still sees the true class); the adaptive attack, same
    eps and steps, also moves the VLM and the heads, and gets past the filter where PGD never does."""
    classifier, vlm, filt, x, y = setup
    correct = columns(classifier, vlm, x, y)["prediction"] == y.numpy()
    assert correct.mean() > 0.8
    eps, steps = 0.03, 10
    results = {}
    for name, adv in [("pgd", attack_images(classifier, x, y, "pgd", eps, steps=steps)),
                      ("margin", adaptive_attack(classifier, vlm, filt, x, y, eps, steps=steps, weight=0.0)),
                      ("adaptive", adaptive_attack(classifier, vlm, filt, x, y, eps, steps=steps, weight=1.0))]:
        batch = columns(classifier, vlm, adv, y)
        fooled = batch["prediction"] != batch["label_index"]
        accepted = filt.verdicts(batch)["verdict"] == "accept"
        results[name] = {"score": filt.score(batch)[correct].mean(), "fooled": fooled[correct].mean(),
                         "evaded": (fooled & accepted)[correct].mean()}
    assert min(r["fooled"] for r in results.values()) > 0.9
    assert max(results["pgd"]["evaded"], results["margin"]["evaded"]) < 0.05
    assert results["adaptive"]["evaded"] > 0.1
    assert results["adaptive"]["score"] < min(results["pgd"]["score"], results["margin"]["score"]) - 0.1


def tiny_network(num_classes: int) -> nn.Module:
    """A classifier factory (``test_adaptive:tiny_network``) split at ``fc``."""
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 8, 3, padding=1), relu=nn.ReLU(),
                                     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, num_classes)))


def test_the_attacker_returns_served_columns_per_input_and_eps(tmp_path):
    config = tmp_path / "clip-micro.json"
    config.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32,
                                                                  "patch_size": 8, "head_width": 16},
                                  "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2,
                                               "layers": 1}}))
    spec = ModelSpec(f"{__name__}:tiny_network", None, "fc", 3, "clip-micro", None, str(config))
    classifier, vlm = spec.classifier(), spec.vlm()
    save_classifier(classifier, tmp_path / "classifier.pt")
    save_vlm(vlm, tmp_path / "vlm.pt")
    spec = ModelSpec(spec.classifier_arch, str(tmp_path / "classifier.pt"), "fc", 3, "clip-micro",
                     str(tmp_path / "vlm.pt"), str(config))
    calib = [columns(classifier, vlm, *images(120, seed)) for seed in (0, 1)]  # untrained: many rows are wrong
    rng = np.random.default_rng(0)
    filt = ConceptFilter(Aligner(np.zeros((8, 16), np.float32), np.zeros(16, np.float32)), rng.normal(size=(4, 16)),
                         rng.normal(size=(3, 16)), {}, {}, list("wxyz"), list("abc")).fit(*calib)
    folder = save_bundle(filt, tmp_path / "bundle", spec, image_size=8, run="test")

    attacker = AdaptiveAttacker(folder, [2, 8], steps=2, device="cpu")
    x, y = images(5, 3)
    batch = {"image": (x * 255).round().byte().permute(0, 2, 3, 1).numpy(), "label_index": y.numpy(),
             "id": np.array([f"i{i}" for i in range(5)], dtype=object),
             "error": np.array(["", "", "OSError: broken", "", ""], dtype=object)}
    out = attacker(batch)
    assert set(out) == {"id", "label_index", "image", "epsilon", "clean_prediction", "prediction", "confidence",
                        "logits", "features", "vlm_embedding"}
    assert list(out["id"]) == ["i0", "i1", "i3", "i4"] * 2 and list(out["epsilon"]) == [2.0] * 4 + [8.0] * 4
    assert out["image"].shape == (8, 8, 8, 3) and out["image"].dtype == np.uint8
    assert out["logits"].shape == (8, 3) and out["features"].shape == (8, 8) and out["vlm_embedding"].shape == (8, 16)
    kept = batch["image"][[0, 1, 3, 4]].astype(int)
    assert np.abs(out["image"][:4].astype(int) - kept).max() <= 2
    assert np.abs(out["image"][4:].astype(int) - kept).max() <= 8
    served = attacker.embedder.embed(batch["image"][[0, 1, 3, 4]])["prediction"]
    assert list(out["clean_prediction"]) == list(served) * 2
    assert filt.verdicts(out)["verdict"].shape == (8,)  # what the caller scores
