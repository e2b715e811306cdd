"""A new user's trial, in small: an image folder (five classes, one corrupt PNG, one stray text file), a resnet18
the user trained on [0, 1] pixels (no normalisation) and saved as a torchvision state dict, and, with no real CLIP
at hand, a VLM that has never seen these classes (the tiny CLIP's architecture, untrained).

The preflight stops a wrong class count in one line before Ray starts and names the preprocessing that fixes the
near-chance accuracy; with it set, `embed` reports the accuracy the user measures themselves; nothing presented
rests on the untrusted VLM (root-cause choice and cards, sentences, neuron names); the run registers its repaired
classifier under its own name and leaves the demo's aliases where they were."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import mlflow
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from conceptlens.config import TrainConfig
from conceptlens.jobs import analyze, check, embed, explain, neurons, report, rootcause
from conceptlens.models import build_classifier, build_vlm, save_vlm
from conceptlens.recipes.data import load_images
from conceptlens.recipes.train_classifier import train_classifier
from conceptlens.world import CLASSES

pytestmark = pytest.mark.slow
NAME, KEPT = "trial", sorted(CLASSES[:5])  # the user's classes: sorted folder names, the model's output order
TRAIN, FOLDER = 800, 60  # the user's training images per class (the world's train split), folder images per class


def run(main, args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(args)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def trial(demo_run, demo_done, tmp_path_factory) -> dict:
    """The folder, the user's checkpoint and blind VLM, the user's own accuracy on the folder, and the run's
    arguments (sharing the demo's run root, so its MLflow store and registry)."""
    home = tmp_path_factory.mktemp("trial")
    manifest = pq.read_table(demo_run / "demo" / "world" / "manifest.parquet", columns=["path", "split", "label"])
    rows = manifest.filter(pc.is_in(manifest["label"], pc.cast(KEPT, manifest["label"].type))).to_pylist()
    train = [r for c in KEPT for r in [r for r in rows if r["split"] == "train" and r["label"] == c][:TRAIN]]
    shown = [r for c in KEPT for r in [r for r in rows if r["split"] == "test" and r["label"] == c][:FOLDER]]
    folder = home / "images"
    for i, r in enumerate(shown):
        (folder / r["label"]).mkdir(parents=True, exist_ok=True)
        (folder / r["label"] / f"{i:04d}.png").write_bytes(Path(r["path"]).read_bytes())
    (folder / KEPT[0] / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / KEPT[0] / "notes.txt").write_text("labelled by hand, 2026")
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=len(KEPT), preprocess="none")  # trained on [0, 1] pixels
    train_classifier(model, load_images([r["path"] for r in train]),
                     torch.tensor([KEPT.index(r["label"]) for r in train]),
                     TrainConfig(epochs=4, batch_size=128, lr=2e-3), device=torch.device("cpu"),
                     log=lambda _: None)
    whole = {k[len("encoder."):]: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    whole |= {"fc." + k[len("head."):]: v for k, v in model.state_dict().items() if k.startswith("head.")}
    torch.save(whole, home / "my_resnet18.pt")  # as the user's own script saves a torchvision model
    with torch.no_grad():  # the user's own accuracy: their script feeds [0, 1] pixels
        images = load_images([r["path"] for r in shown]).float() / 255
        own = float((model.eval()(images).argmax(1).numpy() == [KEPT.index(r["label"]) for r in shown]).mean())
    save_vlm(build_vlm("conceptworld-tiny"), home / "clip.pt")  # never trained: blind to every class
    args = [f"run.root={demo_run}", f"run.name={NAME}", f"data.source={folder}", "data.image_size=48",
            "classifier.arch=resnet18", f"classifier.checkpoint={home / 'my_resnet18.pt'}",
            f"classifier.num_classes={len(KEPT)}", f"vlm.pretrained={home / 'clip.pt'}", "run.device=cpu",
            "embed.shard_size=150", "rootcause.extractors=[vlm,concepts,encoder]", "rootcause.reductions=[none]",
            "rootcause.clusterings=[kmeans]", "rootcause.hudd=false", "neurons.visualise.neurons=0",
            "explain.easy_clusters=4", "explain.sweep_clusters=[2]"]
    return {"args": args, "own": own, "run": demo_run / NAME, "folder": folder, "aliases": demo_aliases(demo_run)}


DEMO_ALIASES = (("conceptlens-demo-classifier", "repaired"), ("conceptlens-demo-classifier", "base"),
                ("conceptlens-demo-filter", "champion"))


def registry(root: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def demo_aliases(root: Path) -> dict:
    """Where the demo's aliases point: (name, alias) -> version."""
    client = registry(root)
    return {(n, a): client.get_model_version_by_alias(n, a).version for n, a in DEMO_ALIASES}


def test_a_checkpoint_of_another_class_count_is_one_line_before_ray_starts(trial):
    import ray

    ray.shutdown()
    code, out = run(check.main, trial["args"] + ["classifier.num_classes=10"])
    assert code == 2 and out.strip().count("\n") == 0, out
    assert f"has {len(KEPT)} classes, the config 10" in out and f"classifier.num_classes={len(KEPT)}" in out
    assert not ray.is_initialized() and not trial["run"].exists()  # no Ray, no empty run folder


def test_the_preflight_names_the_preprocessing_that_fixes_the_model(trial):
    import ray

    ray.shutdown()
    for main in (check.main, embed.main):  # embed runs the same preflight first, before Ray
        code, out = run(main, trial["args"])
        assert code == 2 and "Set classifier.preprocess=none" in out and "under each preprocessing" in out, out
        assert not ray.is_initialized() and not trial["run"].exists()
    tried = out.split("under each preprocessing: ")[1].split(". Set")[0]  # "imagenet 0.19, clip 0.21, ..."
    accuracies = {name: float(value) for name, value in re.findall(r"(\w+) (\d\.\d+)", tried)}
    assert set(accuracies) == {"imagenet", "clip", "half", "none", "byte"}
    assert accuracies["none"] >= accuracies["imagenet"] + 0.2


@pytest.fixture(scope="module")
def embedded(trial) -> tuple[int, str]:
    return run(embed.main, trial["args"] + ["classifier.preprocess=none"])


def test_with_the_fix_embed_reports_the_users_own_accuracy_and_names_what_it_skipped(trial, embedded):
    code, out = embedded
    assert code == 0, out
    metrics = json.loads((trial["run"] / "embed" / "metrics.json").read_text())
    assert metrics["accuracy"]["all"] == pytest.approx(trial["own"], abs=0.01)
    assert "classifier accuracy against the labels: all" in out
    assert "broken.png" in out and "notes.txt" in out  # named, not only counted
    assert metrics["skipped_files"] == [f"{KEPT[0]}/notes.txt"] and metrics["rejects"] == 1
    recorded = json.loads((trial["run"] / "embed" / "inputs.json").read_text())["inputs"]
    assert recorded["classifier.preprocess"] == "none"
    assert "VLM does not know these classes" in out  # the preflight's warning, before the analysis says it again


@pytest.fixture(scope="module")
def analysed(trial, embedded) -> dict:
    outputs = {}
    for name, main in (("analyze", analyze.main), ("rootcause", rootcause.main), ("explain", explain.main),
                       ("neurons", neurons.main), ("report", report.main)):
        outputs[name] = run(main, trial["args"])
        assert outputs[name][0] == 0, outputs[name][1]
    return outputs


def test_nothing_presented_rests_on_the_untrusted_vlm(trial, analysed):
    folder = trial["run"]
    trust = json.loads((folder / "analyze" / "summary.json").read_text())["trust"]
    assert not trust["sees_classes"]
    pipelines = pq.read_table(folder / "rootcause" / "pipelines.parquet").to_pylist()
    chosen = next(p for p in pipelines if p["chosen"])
    assert chosen["pipeline"].startswith("encoder/")  # vlm and concepts pipelines ran, marked, not chosen
    assert {p["pipeline"].split("/")[0] for p in pipelines if p["untrusted"]} == {"vlm", "concepts"}
    cards = json.loads((folder / "rootcause" / "cards.json").read_text())
    assert all(not card["concepts"] for cards_of_set in cards.values() for card in cards_of_set)
    summary = json.loads((folder / "explain" / "summary.json").read_text())
    assert "does not recognise these classes" in summary["withheld"]
    assert all(not c["sentences"] for c in summary["clusters"])
    assert not any(pq.read_table(folder / "explain" / "sentences.parquet", columns=["shown"])["shown"].to_pylist())
    table = pq.read_table(folder / "neurons" / "neurons.parquet", columns=["concepts"]).to_pylist()
    assert table and all(not r["concepts"] for r in table)
    page = (folder / "report" / "index.html").read_text()
    assert "No sentence is shown" in page and "were not chosen" in page
    assert "<code>evaluate</code>" not in page  # own data has no truth: the page does not send the user to evaluate


def test_the_run_registers_under_its_own_name_and_the_demos_aliases_stay(trial, analysed):
    assert demo_aliases(trial["run"].parent) == trial["aliases"]
    ours = registry(trial["run"].parent).get_model_version_by_alias(f"conceptlens-{NAME}-classifier", "repaired")
    assert ours.tags["lineage.base_model"].startswith(f"models:/conceptlens-{NAME}-classifier/")
