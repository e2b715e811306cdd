"""The trust check end to end: with a VLM that does not know the classes, `analyze` says so in one line,
marks its results unreliable and presents none of them as findings; on the demo it passes."""
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from conceptlens.config import load_config
from conceptlens.jobs import analyze, embed, monitor
from conceptlens.models import build_vlm, save_vlm
from conceptlens.world import CLASSES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def blind(demo_run, tmp_path_factory, demo_config):
    """`embed` + `analyze` of 400 held-out world images with the demo's classifier and a tiny CLIP that was never
    trained (the demo's architecture, random weights: a VLM at chance on these classes)."""
    folder = tmp_path_factory.mktemp("blind")
    torch.manual_seed(0)
    save_vlm(build_vlm(load_config([demo_config]).vlm.arch), folder / "untrained-clip.pt")
    manifest = pq.read_table(demo_run / "demo" / "world" / "manifest.parquet", columns=["id", "path", "split", "label"])
    rows = [manifest.filter(pc.equal(manifest["split"], split)).slice(0, 200) for split in ("calib", "test")]
    pq.write_table(pa.concat_tables(rows), folder / "rows.parquet")
    trained = json.loads((demo_run / "demo" / "world" / "models.json").read_text())
    args = [f"run.root={folder}", "run.name=blind", f"data.source={folder / 'rows.parquet'}",
            f"data.classes=[{','.join(CLASSES)}]", f"classifier.checkpoint={trained['classifier']}",
            f"vlm.pretrained={folder / 'untrained-clip.pt'}", "embed.batch_size=100", "run.device=cpu",
            "monitor.adaptive.rows=0"]
    assert embed.main(args) == 0
    return folder / "blind" / "analyze", args


def test_a_blind_vlm_is_reported_and_nothing_is_presented_as_a_finding(blind, capsys):
    out, args = blind
    capsys.readouterr()
    assert analyze.main(args) == 0
    printed = capsys.readouterr().out
    assert "warning: the VLM does not recognise these classes" in printed
    assert "encoder" not in printed and "concepts that go with failure" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["trust"]["sees_classes"] and summary["trust"]["skill"] < 0.2
    assert summary["faults"]["reliable"] is False
    blamed = [r for per_class in summary["responsible"].values() for items in per_class.values() for r in items]
    assert all(r["reliable"] is False for r in blamed)
    assert json.loads((out / "metrics.json").read_text())["responsible_top"] == {"aligned": {}, "vlm": {}}
    for source in ("aligned", "vlm"):
        assert not any(pq.read_table(out / f"heatmaps_{source}.parquet", columns=["reliable"])["reliable"].to_pylist())


def test_the_filter_of_a_blind_analysis_names_no_concept(blind, capsys):
    out, args = blind
    if not (out / "summary.json").is_file():  # run alone, without the test above
        assert analyze.main(args) == 0
    assert monitor.main(args + ["monitor.model_name="]) == 0
    assert "the filter's explanations leave them out" in capsys.readouterr().out
    info = json.loads((out.parent / "monitor" / "bundle" / "filter.json").read_text())
    assert info["unreliable_concepts"] == info["concept_names"]
