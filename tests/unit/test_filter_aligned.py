"""The filter's aligned mode (``concepts_from: aligned``): its signals come from the encoder features through the
aligner alone, so it scores without the VLM's image embedding; the bundle records the mode; the torch version
(the adaptive attack's) agrees and never runs the VLM."""
import json

import numpy as np
import pytest
import torch

from conceptlens.config import ConfigError, load_config
from conceptlens.runtime.adaptive import TorchFilter
from conceptlens.runtime.failure_modes import FailureModes
from conceptlens.runtime.filter import SIGNALS, VLM_SIGNALS, ConceptFilter, signal_names
from conceptlens.semantic import unit
from test_runtime_filter import make_filter, world

SERVED = ("prediction", "logits", "features")  # what a classifier alone gives


def fitted(mode: str) -> ConceptFilter:
    filt = make_filter()
    filt.concepts_from = mode
    return filt.fit(world(1500, 0), world(600, 1, adversarial=True))


def test_aligned_scores_need_no_vlm_embedding_and_equal_the_filter_on_A_of_z():
    """Scored on the classifier's columns alone, the aligned filter gives the scores it gives offline on the full
    calibration-style rows; every signal it reads is the vlm-mode filter's signal of the same name (both fitted
    alike: the aligner, statistics, references and Gaussians do not depend on the mode), i.e. computed on A(z)."""
    aligned, today = fitted("aligned"), fitted("vlm")
    assert aligned.signal_names == tuple(s for s in SIGNALS if s not in VLM_SIGNALS) and not aligned.needs_vlm
    test = world(800, 2)
    served = {k: test[k] for k in SERVED}
    garbage = served | {"vlm_embedding": unit(np.random.default_rng(9).normal(size=test["vlm_embedding"].shape))}
    for head, scores in aligned.score_all(test).items():
        np.testing.assert_array_equal(aligned.score_all(served)[head], scores)
        np.testing.assert_array_equal(aligned.score_all(garbage)[head], scores)  # the VLM embedding is never read
    np.testing.assert_allclose(aligned.aligner.W, today.aligner.W)
    shared = [SIGNALS.index(s) for s in aligned.signal_names]
    np.testing.assert_allclose(aligned.signals(served), today.signals(test)[:, shared], rtol=1e-12, atol=1e-12)
    # the aligned margin is the class prompt margin of unit(A(z)), by hand
    sim = unit(aligned.aligner(test["features"])) @ aligned.classes.T
    rows = np.arange(len(sim))
    other = sim.copy()
    other[rows, test["prediction"]] = -np.inf
    np.testing.assert_allclose(aligned.signals(served)[:, aligned.signal_names.index("aligned_margin")],
                               sim[rows, test["prediction"]] - other.max(1), rtol=1e-6)
    assert len(aligned.explain(served, top=2)[0]) == 2


def test_the_bundle_records_the_mode_and_a_mismatch_is_refused(tmp_path):
    aligned = fitted("aligned")
    folder = aligned.save(tmp_path / "bundle")
    info = json.loads((folder / "filter.json").read_text())
    assert info["concepts_from"] == "aligned" and info["signals"] == list(signal_names("aligned"))
    loaded = ConceptFilter.load(folder)
    assert loaded.concepts_from == "aligned" and not loaded.needs_vlm
    test = {k: v for k, v in world(200, 3).items() if k in SERVED}
    np.testing.assert_array_equal(loaded.score_all(test)["adversarial"], aligned.score_all(test)["adversarial"])
    info["concepts_from"] = "vlm"  # heads of 7 signals under a mode that reads 10
    (folder / "filter.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="concepts_from 'vlm'.*re-run `conceptlens monitor`"):
        ConceptFilter.load(folder)
    old = fitted("vlm").save(tmp_path / "old")  # a bundle from before the mode existed reads as vlm
    info = json.loads((old / "filter.json").read_text())
    del info["concepts_from"]
    (old / "filter.json").write_text(json.dumps(info))
    assert ConceptFilter.load(old).concepts_from == "vlm"
    with pytest.raises(ValueError, match="concepts_from"):
        signal_names("clip")


def test_the_config_names_the_mode_and_rejects_unknown_values():
    assert load_config([], ["monitor.concepts_from=vlm"]).monitor.concepts_from == "vlm"
    with pytest.raises(ConfigError, match=r"monitor\.concepts_from.*aligned, vlm"):
        load_config([], ["monitor.concepts_from=clip"])
    with pytest.raises(ConfigError, match="concept_from"):
        load_config([], ["monitor.concept_from=vlm"])


def test_the_torch_filter_of_an_aligned_bundle_agrees_and_never_runs_the_vlm():
    aligned = fitted("aligned")
    test = world(300, 4)
    test["prediction"] = test["logits"].argmax(1)  # served predictions are the argmax of the logits
    torch_filter = TorchFilter(aligned)
    out = torch_filter(torch.as_tensor(test["logits"]), torch.as_tensor(test["features"]))
    np.testing.assert_allclose(out["signals"].numpy(), aligned.signals(test), rtol=1e-5, atol=1e-4)
    for head, scores in aligned.score_all(test).items():
        np.testing.assert_allclose(out["scores"][head].numpy(), scores, atol=1e-6)

    class NoVLM:
        def encode_images(self, x):
            raise AssertionError("the VLM ran")

    class Split(torch.nn.Module):
        def features(self, x):
            return x.flatten(1)[:, :8].double() * 3

        def head(self, f):
            return f[:, :3]
    torch_filter.images(Split(), NoVLM(), torch.rand(4, 3, 4, 4))


def test_failure_modes_of_an_aligned_filter_match_in_the_encoder_space(tmp_path):
    """Without the VLM embedding at serving, clusters made in the vlm space are matched in the encoder space."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = world(400, 5)
    wrong = np.flatnonzero(rows["prediction"] != rows["label_index"])
    ids = np.array([f"r{i}" for i in range(400)])
    (tmp_path / "summary.json").write_text(json.dumps({"sets": {"heldout": {"chosen": {"pipeline": "vlm/none/kmeans"}}}}))
    pq.write_table(pa.table({"set": ["heldout"] * len(wrong), "id": ids[wrong], "pipeline": ["vlm/none/kmeans"] * len(wrong),
                             "cluster": (np.arange(len(wrong)) % 2).astype(np.int64), "noise": [False] * len(wrong)}),
                   tmp_path / "clusters.parquet")
    notes = []
    modes = FailureModes.from_outputs(tmp_path, None, rows | {"id": ids}, vlm=False, log=notes.append)
    assert modes is not None and modes.space == "encoder" and any("concepts_from aligned" in n for n in notes)
    found = modes.nearest({k: rows[k][:20] for k in SERVED})
    assert len(found["cluster"]) == 20
    assert FailureModes.from_outputs(tmp_path, None, rows | {"id": ids}).space == "vlm"
