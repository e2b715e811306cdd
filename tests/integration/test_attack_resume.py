"""`conceptlens attack` re-runs: the same settings reuse the adversarial set, other settings recompute it."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conceptlens.jobs import attack
from conceptlens.world import CLASSES

pytestmark = pytest.mark.slow
PER_SPLIT = 8


@pytest.fixture(scope="module")
def source(demo_run, tmp_path_factory):
    """40 calib and 40 test images of the demo's world."""
    manifest = pq.read_table(demo_run / "demo" / "world" / "manifest.parquet")
    rows = pa.concat_tables([manifest.filter(pc.equal(manifest["split"], s)).slice(0, 40) for s in ("calib", "test")])
    path = tmp_path_factory.mktemp("attack-data") / "manifest.parquet"
    pq.write_table(rows, path)
    return path


def args(demo_run, source, *extra):
    trained = json.loads((demo_run / "demo" / "world" / "models.json").read_text())
    return [f"run.root={demo_run}", "run.name=resume", f"data.source={source}", f"data.classes=[{','.join(CLASSES)}]",
            "data.splits=[calib,test]", f"classifier.checkpoint={trained['classifier']}",
            f"vlm.pretrained={trained['vlm']}", "attack.attacks=[fgsm]", f"attack.rows_per_split={PER_SPLIT}",
            "embed.batch_size=16", "embed.shard_size=10", "run.device=cpu", *extra]


def outputs(out):
    """Every file the attack wrote, with its modification time."""
    files = [out / "adversarial.parquet", *out.glob("images/*/*.png"), *out.glob("embeddings/*")]
    return {p: p.stat().st_mtime_ns for p in files}


def test_the_same_settings_reuse_and_changed_epsilons_recompute(demo_run, source, local_ray, capsys):
    out = demo_run / "resume" / "attack"
    assert attack.main(args(demo_run, source, "attack.epsilons=[2]")) == 0
    first = pq.read_table(out / "adversarial.parquet")
    assert first.num_rows == 2 * PER_SPLIT and set(first["epsilon"].to_pylist()) == {2.0}
    made = outputs(out)
    assert len(made) == 1 + first.num_rows + 3  # manifest, PNGs, two shards and _shards.json

    capsys.readouterr()
    assert attack.main(args(demo_run, source, "attack.epsilons=[2]")) == 0
    assert "attack: reusing" in capsys.readouterr().out
    assert outputs(out) == made  # nothing rewritten

    assert attack.main(args(demo_run, source, "attack.epsilons=[8]")) == 0
    log = capsys.readouterr().out
    assert "attack.epsilons changed ([2.0] → [8.0])" in log and "recomputing" in log and "reusing" not in log
    second = pq.read_table(out / "adversarial.parquet")
    assert set(second["epsilon"].to_pylist()) == {8.0}
    assert second["source_id"].to_pylist() == first["source_id"].to_pylist()  # the same seeded sample
    assert not (out / "images" / "fgsm-2").exists()  # no stale images
    embedded = pq.read_table(out / "embeddings", columns=["id", "epsilon"])
    assert sorted(embedded["id"].to_pylist()) == sorted(second["id"].to_pylist())
    assert set(embedded["epsilon"].to_pylist()) == {8.0}
    assert set(json.loads((out / "metrics.json").read_text())["success"]) == {"fgsm_eps8"}
    clean = pq.read_table(source, columns=["id", "path"])
    sources = dict(zip(clean["id"].to_pylist(), clean["path"].to_pylist()))
    moved = [np.abs(np.asarray(Image.open(r["path"]), np.int16)
                    - np.asarray(Image.open(sources[r["source_id"]]).convert("RGB"), np.int16)).max()
             for r in second.to_pylist()]
    assert max(moved) > 2 + 1  # the new images use the new budget, not the old one
