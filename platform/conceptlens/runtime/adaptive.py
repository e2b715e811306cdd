"""An adaptive white-box attack on the classifier together with its runtime concept filter.

A detector is only as good as its resistance to an attacker who knows it (Carlini & Wagner 2017,
"Adversarial examples are not easily detected"; Tramèr et al. 2020, "On adaptive attacks to
adversarial example defenses"). This attack knows everything: the classifier, the VLM and every
array of the :class:`~conceptlens.runtime.filter.ConceptFilter`. :class:`TorchFilter` re-implements
the filter's forward pass in torch (float64), images -> classifier logits and features and VLM
embedding -> each signal of ``SIGNALS`` -> each head's logit and score, so that the filter is
differentiable in the image.

:func:`adaptive_attack` runs L∞ PGD (random start, signed steps, projection onto the ``eps`` ball
and [0, 1]) that minimises, per input,

    max(z_y - max_{j≠y} z_j, -kappa)  +  weight · [ŷ ≠ y] · Σ_heads max(head logit - logit(threshold), -kappa)

where ``z`` are the classifier's logits, ``y`` the true label and ``ŷ`` the current prediction: the first
term (Carlini & Wagner's margin loss) pushes another class above the true one, the second pushes every
head below its threshold. Each term stops pulling once its boundary is passed by ``kappa`` (logit units),
so that neither drowns out the other and the result survives quantisation to ``uint8``. The filter term
counts only once the iterate fools the classifier (selective PGD, Bryniarski et al. 2022, "Evading
adversarial example detection defenses with orthogonal projected gradient descent"): summed from the
start, its signed steps hold the classifier back and the attack fools fewer inputs than plain PGD. It
keeps, per input, the best iterate: the first that fools the classifier and passes the filter, else the
one that fools it with the lowest filter score (:meth:`ConceptFilter.score`), else the last.

The attack *succeeds* on an input the classifier gets right when clean if the adversarial image,
quantised to ``uint8`` as it would be stored and served, changes the prediction and the filter
accepts it (verdict ``accept``). :class:`AdaptiveAttacker` gives the caller what it needs to count
that: the served model columns of the quantised adversarial images, to score with the NumPy filter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from conceptlens.models.embedding import Embedder
from conceptlens.runtime.attacks import _check_inputs, _frozen_eval
from conceptlens.runtime.bundle import bundle_models
from conceptlens.runtime.filter import HEADS, REFERENCES, ConceptFilter

__all__ = ["SIGNAL_FUNCTIONS", "AdaptiveAttacker", "FilterInputs", "TorchFilter", "adaptive_attack"]


@dataclass
class FilterInputs:
    """What the signals of one batch read, all float64 but ``predicted``: ``logits`` ``(N, K)``,
    ``features`` ``(N, D)``, ``predicted`` int64 ``(N,)`` (argmax of the logits, as served), the unit
    ``aligned`` features and ``vlm`` embedding ``(N, E)``, and their z-scored concept heatmaps
    ``z_aligned``/``z_vlm`` ``(N, C)``; ``vlm``/``z_vlm`` are None for a filter of ``concepts_from`` aligned."""
    logits: torch.Tensor
    features: torch.Tensor
    predicted: torch.Tensor
    aligned: torch.Tensor
    vlm: torch.Tensor | None
    z_aligned: torch.Tensor
    z_vlm: torch.Tensor | None


SignalFunction = Callable[["TorchFilter", FilterInputs], torch.Tensor]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (_unit(a) * _unit(b)).sum(-1)


def _margin(sim: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """``sim[ŷ]`` minus the best other class, per row: ``(N, K)`` -> ``(N,)``."""
    own = sim.gather(1, predicted[:, None])[:, 0]
    others = sim.masked_fill(F.one_hot(predicted, sim.shape[1]).bool(), -math.inf)
    return own - others.amax(1)


def _cos_reference(kind: str, f: "TorchFilter", x: FilterInputs) -> torch.Tensor:
    if kind not in f.references:  # as in the NumPy filter: no reference, a constant 0
        return torch.zeros(len(x.predicted), dtype=torch.float64, device=x.predicted.device)
    return _cos(x.z_aligned, f.references[kind][x.predicted])


# signal name -> its torch version, ``(TorchFilter, FilterInputs) -> float64 (N,)``; one per ``SIGNALS`` entry
SIGNAL_FUNCTIONS: dict[str, SignalFunction] = {
    "msp": lambda f, x: x.logits.softmax(1).amax(1),
    "energy": lambda f, x: -torch.logsumexp(x.logits, 1),
    "vlm_margin": lambda f, x: _margin(x.vlm @ f.classes.T, x.predicted),
    "aligned_margin": lambda f, x: _margin(x.aligned @ f.classes.T, x.predicted),
    "consistency": lambda f, x: _cos(x.z_aligned, x.z_vlm),
    "agreement": lambda f, x: (x.aligned * x.vlm).sum(1),
    "mahalanobis": lambda f, x: f.mahalanobis(x.features),
} | {f"cos_{kind}": partial(_cos_reference, kind) for kind in REFERENCES}


def _logit(p: float) -> float:
    """``log(p / (1 - p))`` with ``p`` clipped to [1e-12, 1 - 1e-12] (a threshold of ±inf stays finite)."""
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return math.log(p) - math.log1p(-p)


class TorchFilter:
    """A :class:`ConceptFilter`'s forward pass in torch float64, differentiable in the model outputs.

    ``signals``: the names the filter's heads were fitted on, in order (default: the filter's
    ``signal_names``, all of ``SIGNALS`` for ``concepts_from`` vlm); each must have an entry in
    :data:`SIGNAL_FUNCTIONS`, else a ``ValueError`` names the missing ones. A filter of ``concepts_from``
    aligned reads no VLM embedding (:attr:`needs_vlm` False): :meth:`images` does not run the VLM."""

    def __init__(self, filt: ConceptFilter, *, signals: Sequence[str] | None = None,
                 device: str | torch.device = "cpu"):
        signals = filt.signal_names if signals is None else signals
        missing = [s for s in signals if s not in SIGNAL_FUNCTIONS]
        if missing:
            raise ValueError(f"the adaptive attack has no torch version of filter signal(s) {missing}: add them "
                             f"to conceptlens.runtime.adaptive.SIGNAL_FUNCTIONS")
        for head, arrays in filt.heads.items():
            if len(arrays["coef"]) != len(signals):
                raise ValueError(f"filter head {head!r} weighs {len(arrays['coef'])} signals, not the "
                                 f"{len(signals)} of {list(signals)}")

        def tensor(a) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, np.float64), device=device)

        self.signal_names = tuple(signals)
        self.needs_vlm = filt.needs_vlm
        self.device = torch.device(device)
        self.W, self.b = tensor(filt.aligner.W), tensor(filt.aligner.b)
        self.concepts, self.classes = tensor(filt.concepts), tensor(filt.classes)
        self.mean = {s: tensor(v) for s, v in filt.mean.items()}
        self.std = {s: tensor(v) for s, v in filt.std.items()}
        self.references = {k: tensor(v) for k, v in (filt.references or {}).items()}
        self.means, self.precision = tensor(filt.gaussians["means"]), tensor(filt.gaussians["precision"])
        self.heads = {h: {k: tensor(v).reshape(-1) for k, v in filt.heads[h].items()} for h in HEADS if h in filt.heads}
        self.thresholds = {h: float(filt.thresholds[h]) for h in self.heads}
        self.threshold_logits = {h: _logit(t) for h, t in self.thresholds.items()}

    def mahalanobis(self, features: torch.Tensor) -> torch.Tensor:
        """Min over classes of the squared Mahalanobis distance, as ``mahalanobis_score``: ``(N, D)`` -> ``(N,)``."""
        xp = features @ self.precision
        d2 = ((xp * features).sum(1)[:, None] - 2.0 * xp @ self.means.T
              + ((self.means @ self.precision) * self.means).sum(1)[None, :])
        return d2.amin(1).clamp_min(0.0)

    def inputs(self, logits: torch.Tensor, features: torch.Tensor,
               vlm_embedding: torch.Tensor | None = None) -> FilterInputs:
        """The quantities signals read, from model outputs ``(N, K)``, ``(N, D)``, ``(N, E)`` (the last unread,
        and may be None, unless :attr:`needs_vlm`)."""
        logits, features = logits.to(self.device, torch.float64), features.to(self.device, torch.float64)
        aligned = _unit(features @ self.W + self.b)
        vlm = _unit(vlm_embedding.to(self.device, torch.float64)) if self.needs_vlm else None
        z = {s: (e @ self.concepts.T - self.mean[s]) / self.std[s] for s, e in (("aligned", aligned), ("vlm", vlm))
             if e is not None}
        return FilterInputs(logits, features, logits.argmax(1), aligned, vlm, z["aligned"], z.get("vlm"))

    def __call__(self, logits: torch.Tensor, features: torch.Tensor, vlm_embedding: torch.Tensor | None = None) -> dict:
        """``prediction`` int64 ``(N,)``, ``signals`` float64 ``(N, S)`` and, per head, ``logits`` and ``scores``
        float64 ``(N,)`` (dicts keyed by head), as ``ConceptFilter.signals`` / ``score_all`` compute them."""
        x = self.inputs(logits, features, vlm_embedding)
        s = torch.stack([SIGNAL_FUNCTIONS[name](self, x) for name in self.signal_names], 1)
        head_logits = {h: ((s - a["centre"]) / a["scale"]) @ a["coef"] + a["intercept"][0]
                       for h, a in self.heads.items()}
        return {"prediction": x.predicted, "signals": s, "logits": head_logits,
                "scores": {h: torch.sigmoid(v) for h, v in head_logits.items()}}

    def images(self, classifier: torch.nn.Module, vlm: torch.nn.Module, x: torch.Tensor) -> dict:
        """:meth:`__call__` on float images ``(N, 3, H, W)`` in [0, 1], plus the classifier's ``model_logits``."""
        features = classifier.features(x)
        logits = classifier.head(features)
        return self(logits, features, vlm.encode_images(x) if self.needs_vlm else None) | {"model_logits": logits}

    def excess(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """``ConceptFilter.score``: the largest head score minus its threshold, ``(N,)``; ``<= 0`` is accepted."""
        return torch.stack([scores[h] - self.thresholds[h] for h in self.heads]).amax(0)


def adaptive_attack(classifier: torch.nn.Module, vlm: torch.nn.Module, filt: ConceptFilter | TorchFilter,
                    images: torch.Tensor, labels: torch.Tensor, eps: float, *, steps: int = 20,
                    step_size: float | None = None, weight: float = 1.0, kappa: float = 3.0,
                    seed: int = 0) -> torch.Tensor:
    """Adversarial versions of ``images`` float ``(N, 3, H, W)`` in [0, 1] against the true ``labels`` int
    ``(N,)`` and the filter (see the module docstring): same shape, dtype and device, ``|adv - images| <= eps``.

    ``classifier`` has ``features``/``head``, ``vlm`` has ``encode_images``; ``step_size`` defaults to
    2.5·eps/steps; ``weight`` scales the filter term (0: margin-loss PGD on the classifier alone, though
    the best iterate is still chosen knowing the filter);
    ``kappa``: how far past its boundary each term still pulls (logit units). Deterministic given ``seed``;
    the caller's global RNG, the models' train/eval mode and their parameters' ``requires_grad`` are left
    as they were."""
    _check_inputs(images, labels, eps, steps)
    if eps == 0 or images.numel() == 0:
        return images.detach().clone()
    torch_filter = filt if isinstance(filt, TorchFilter) else TorchFilter(filt, device=images.device)
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    x, y = images.detach().float(), labels.detach().to(images.device).long()
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _frozen_eval(classifier), _frozen_eval(vlm):
        torch.manual_seed(seed)
        adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0.0, 1.0)
        best = adv.clone()
        # per input: the lowest max(filter excess, 0) among iterates that fool the classifier (inf: none yet);
        # strict improvement keeps the first accepted one
        best_key = torch.full((len(x),), math.inf, dtype=torch.float64, device=x.device)
        for step in range(steps + 1):
            last = step == steps
            adv.requires_grad_(not last)
            with torch.enable_grad() if not last else torch.no_grad():
                out = torch_filter.images(classifier, vlm, adv)
                fooled = out["prediction"].to(x.device) != y
                key = torch_filter.excess(out["scores"]).clamp_min(0.0).to(x.device)
                better = fooled & (key < best_key)
                best[better], best_key[better] = adv.detach()[better], key[better]
                if last:
                    break
                z = out["model_logits"]
                true = z.gather(1, y[:, None])[:, 0]
                other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -math.inf).amax(1)
                loss = (true - other).clamp_min(-kappa).double()
                for head, head_logit in out["logits"].items():
                    excess = (head_logit - torch_filter.threshold_logits[head]).clamp_min(-kappa).to(x.device)
                    loss = loss + weight * torch.where(fooled, excess, 0.0)
                grad, = torch.autograd.grad(loss.sum(), adv)
            adv = adv.detach() - alpha * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0.0, 1.0)
        never = torch.isinf(best_key)
        best[never] = adv.detach()[never]
    best = torch.min(torch.max(best, x - eps), x + eps).clamp(0.0, 1.0)
    return best.to(images.dtype)


class AdaptiveAttacker:
    """Adaptive adversarial versions of a batch of decoded images at each of ``epsilons`` (1/255 units),
    against the models and filter of the bundle in ``bundle_folder`` (a Ray Data actor, like ``Attacker``).

    ``__call__(batch)`` takes ``image`` ``uint8 (N, H, W, 3)``, ``label_index`` and pass-through columns
    (rows whose ``error`` is set are dropped) and returns one row per (input, eps): the pass-through columns,
    ``image`` (the adversarial image quantised to ``uint8``, as stored and served: cheap at these sizes, and
    what examples show), ``epsilon``, ``clean_prediction``, and the :class:`Embedder` columns of the quantised
    image as serving computes them (``prediction``, ``confidence``, ``logits``, ``features``,
    ``vlm_embedding``), for the caller to score with the NumPy filter.
    """

    def __init__(self, bundle_folder: str | Path, epsilons: Sequence[float], *, steps: int = 20,
                 weight: float = 1.0, kappa: float = 3.0, seed: int = 0, device: str = "auto"):
        spec, _ = bundle_models(bundle_folder)
        self.embedder = Embedder(spec, device)
        self.filter = TorchFilter(ConceptFilter.load(bundle_folder), device=self.embedder.device)
        self.epsilons = [float(e) for e in epsilons]
        if not self.epsilons:
            raise ValueError("the adaptive attacker needs at least one epsilon")
        self.steps, self.weight, self.kappa, self.seed = steps, weight, kappa, seed

    def __call__(self, batch: dict) -> dict:
        ok = np.asarray([not e for e in batch.get("error", [""] * len(batch["image"]))], bool)
        keep = {k: np.asarray(v)[ok] for k, v in batch.items() if k not in ("image", "error")}
        images = np.ascontiguousarray(np.asarray(batch["image"])[ok])
        x = torch.from_numpy(images).to(self.embedder.device).permute(0, 3, 1, 2).float() / 255
        y = torch.as_tensor(keep["label_index"], device=self.embedder.device).long()
        clean = self.embedder.embed(images)["prediction"]
        parts = []
        for eps in self.epsilons:
            adv = adaptive_attack(self.embedder.classifier, self.embedder.vlm, self.filter, x, y, eps / 255,
                                  steps=self.steps, weight=self.weight, kappa=self.kappa, seed=self.seed)
            stored = (adv * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            parts.append(keep | {"image": stored, "epsilon": np.full(len(stored), eps), "clean_prediction": clean}
                         | self.embedder.embed(stored))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
