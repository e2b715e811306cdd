"""EfficientNet-Lite0, ImageNet-pretrained, fine-tuned on a small ConceptWorld (`conf/experiments/efficientnet.yaml`)
and taken through `world`, `embed`, `analyze`, `attack`, `monitor` and `neurons`: split at `_fc`, embedded,
analysed, attacked, filtered and served in process, its neurons found and its head repaired. (Its LRP relevance for
`rootcause` is tested in tests/unit/test_rootcause_images.py.)

Its own small world (the demo's generator and scenarios at a tenth of the size), the demo's tiny CLIP as the
observer, its own run root (so its own MLflow store and registry). A pretrained backbone sees through the demo's
blind spot, so the gap check would refuse the world: `world.allow_unplanted=true`."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from conceptlens.jobs import analyze, attack, embed, monitor, neurons, world
from conceptlens.models import build_classifier
from conceptlens.models.embedding import decode_image
from conceptlens.serve.model import ServedModel

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


STEPS = (world, embed, analyze, attack, monitor, neurons)


@pytest.fixture(scope="module")
def run(demo_run, tmp_path_factory):
    vlm = json.loads((demo_run / "demo" / "world" / "models.json").read_text())["vlm"]
    root = tmp_path_factory.mktemp("backbone")
    argv = ["--config", str(REPO / "conf" / "demo.yaml"), "--config", str(REPO / "conf/experiments/efficientnet.yaml"),
            "--config", str(REPO / "conf" / "profiles" / "quick.yaml"), f"run.root={root}",
            "world.splits={train: 3000, vlm: 100, calib: 600, test: 600}", f"vlm.pretrained={vlm}",
            "world.allow_unplanted=true", "attack.attacks=[fgsm,pgd]", "attack.epsilons=[8]",
            "attack.rows_per_split=40", "monitor.adaptive.rows=0", "neurons.visualise.neurons=0"]
    for step in STEPS:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = step.main(argv)
        assert code == 0, f"{step.__name__}: {out.getvalue()[-3000:]}"
    return root / "efficientnet"


def test_the_fine_tuned_backbone_is_split_at_fc_and_learnt_the_world(run):
    models = json.loads((run / "world" / "models.json").read_text())
    clf = build_classifier("efficientnet_lite0", num_classes=10, head="_fc", checkpoint=models["classifier"],
                           preprocess="half")
    assert isinstance(clf.head, torch.nn.Linear) and clf.head.in_features == 1280
    embedded = pq.read_table(run / "embed" / "embeddings", columns=["features"])
    assert len(embedded["features"][0].as_py()) == 1280
    accuracy = json.loads((run / "embed" / "metrics.json").read_text())["accuracy"]["test"]
    assert accuracy > 0.5  # chance is 0.1


def test_analyze_attack_and_neurons_ran_on_it(run):
    summary = json.loads((run / "analyze" / "summary.json").read_text())
    assert summary["rows"] == 1200 and (run / "analyze" / "heatmaps_vlm.parquet").is_file()
    success = json.loads((run / "attack" / "metrics.json").read_text())["success"]
    assert success["pgd_eps8"]["success_rate"] > 0.5  # white-box gradients flow through the backbone
    neurons = json.loads((run / "neurons" / "metrics.json").read_text())
    assert neurons["repair"]["edit"]
    repaired = build_classifier("efficientnet_lite0", num_classes=10, head="_fc", preprocess="half",
                                checkpoint=next((run / "neurons" / "classifier").glob("*.pt")))
    assert repaired.head.weight.shape == (10, 1280)


def test_its_filter_is_served_with_the_fine_tuned_backbone(run):
    """The registered bundle names the fine-tuned backbone; the served model (in process, no Ray) rebuilds it and
    labels test images as the Ray Data embedding job did."""
    bundle = run / "monitor" / "bundle"
    model = ServedModel(str(bundle), None, "cpu")
    assert model.spec.classifier_arch == "efficientnet_lite0" and model.spec.classifier_head == "_fc"
    rows = pq.read_table(run / "embed" / "embeddings", columns=["id", "split", "prediction"]).to_pylist()
    embedded = {r["id"]: r["prediction"] for r in rows if r["split"] == "test"}
    paths = {r["id"]: r["path"] for r in pq.read_table(run / "world" / "manifest.parquet",
                                                       columns=["id", "path"]).to_pylist() if r["id"] in embedded}
    ids = sorted(paths)[:6]
    images = [decode_image(paths[i], model.image_size)[0] for i in ids]

    async def ask():
        return await asyncio.gather(*(model.predict(x) for x in images))
    answers = asyncio.run(ask())
    assert [a["label"] for a in answers] == [model.filter.class_names[embedded[i]] for i in ids]
    assert {a["verdict"] for a in answers} <= set(model.filter.verdict_names)
    assert "adversarial" in model.filter.heads  # monitor ran after attack: both heads
