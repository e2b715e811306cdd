"""The adaptive attack's torch copy of the concept filter against the NumPy filter (unit and integration tests)."""
from __future__ import annotations

import numpy as np
import torch

from conceptlens.runtime.adaptive import TorchFilter
from conceptlens.runtime.filter import ConceptFilter

MODEL_COLUMNS = ("logits", "features", "vlm_embedding")


def assert_parity(filt: ConceptFilter, batch: dict, out: dict | None = None) -> None:
    """The torch forward pass (``out``, else run on the batch's model columns) gives the NumPy filter's
    signals and head scores on ``batch``."""
    if out is None:
        with torch.no_grad():
            out = TorchFilter(filt)(*(torch.as_tensor(batch[k]) for k in MODEL_COLUMNS))
    np.testing.assert_array_equal(out["prediction"].numpy(), batch["prediction"])
    np.testing.assert_allclose(out["signals"].numpy(), filt.signals(batch), rtol=1e-5, atol=1e-4)
    scores = filt.score_all(batch)
    assert list(out["scores"]) == list(scores)
    for head in scores:
        np.testing.assert_allclose(out["scores"][head].numpy(), scores[head], atol=1e-4)
