"""Train and evaluate a tiny CLIP on ConceptWorld's ``vlm`` split.

Plain contrastive training on such a world learns colour, background and weather but not
the object's shape: the other attributes already tell captions apart within a batch, and the
text tower learns to ignore shape words. Two things fix that (see the README): captions that
often name only a random subset of the attributes, and a supervised term trained jointly
with the contrastive loss: the ``vlm`` split's labels classified by the text embeddings of
their prompts ("a photo of a star", "a photo of an object in fog", ...), one softmax per
class set and attribute group. Duplicate captions in a batch are positives of each other.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from conceptlens.config import VLMConfig
from conceptlens.recipes.data import minibatches, to_float
from conceptlens.world.vocabulary import ATTRIBUTE_GROUPS, CLASSES, caption


def training_caption(label: str, attributes: dict[str, str], subset_share: float, rng: np.random.Generator) -> str:
    """A full caption, or (with probability ``subset_share``) one naming a random subset of the attributes."""
    if rng.random() >= subset_share:
        return caption(label, attributes)
    include = {g.name for g in ATTRIBUTE_GROUPS if rng.random() < 0.3}
    return caption(label if rng.random() < 0.7 or not include else None, attributes, include)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


def _embed_prompts(model, vlm, texts: list[str], device) -> torch.Tensor:
    return F.normalize(model.encode_text(vlm.tokenizer(texts).to(device)), dim=-1)


def train_clip(vlm, images: torch.Tensor, labels: np.ndarray, attributes: dict[str, np.ndarray],
               cfg: VLMConfig, *, device: torch.device, seed: int = 0,
               log: Callable[[str], None] = print) -> dict:
    """Train ``vlm`` (a :class:`conceptlens.models.VLM`) in place.

    ``images``: ``uint8 (N, 3, H, W)``; ``labels``: class indices ``(N,)``; ``attributes``: for
    each attribute group, the value index of every image ``(N,)``.
    """
    model = vlm.to(device).model
    model.train()
    targets = {"class": torch.as_tensor(labels)} | {g.name: torch.as_tensor(attributes[g.name])
                                                    for g in ATTRIBUTE_GROUPS}
    prompts = {"class": [caption(c, {}, set()) for c in CLASSES]}
    prompts |= {g.name: [caption(None, {g.name: v}, {g.name}) for v in g.values] for g in ATTRIBUTE_GROUPS}
    all_prompts, prompt_sizes = sum(prompts.values(), []), [len(p) for p in prompts.values()]
    tc = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps = tc.epochs * -(-len(images) // tc.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=steps, pct_start=0.1)
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    start, epoch = time.time(), 0
    for epoch in range(1, tc.epochs + 1):
        sums, seen = {"contrastive": 0.0, "supervised": 0.0}, 0
        for idx in minibatches(len(images), tc.batch_size, gen):
            ii = idx.numpy()
            texts = [training_caption(CLASSES[labels[i]],
                                      {g.name: g.values[attributes[g.name][i]] for g in ATTRIBUTE_GROUPS},
                                      cfg.caption_subset, rng) for i in ii]
            img = F.normalize(model.encode_image(vlm.normalize(to_float(images[idx], device))), dim=-1)
            txt, *prompt_emb = _embed_prompts(model, vlm, texts + all_prompts, device).split(
                [len(texts)] + prompt_sizes)
            scale = model.logit_scale.exp().clamp(max=100)
            logits = scale * img @ txt.T
            codes = torch.as_tensor(np.unique(texts, return_inverse=True)[1], device=device)
            same = (codes[:, None] == codes[None, :]).float()
            same = same / same.sum(1, keepdim=True)
            contrastive = (_soft_cross_entropy(logits, same) + _soft_cross_entropy(logits.T, same)) / 2
            supervised = sum(F.cross_entropy(scale * img @ emb.T, t[idx].to(device))
                             for emb, t in zip(prompt_emb, targets.values()))
            loss = contrastive + cfg.aux_weight * supervised / len(targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums["contrastive"] += contrastive.item() * len(idx)
            sums["supervised"] += supervised.item() / len(targets) * len(idx)
            seen += len(idx)
        elapsed = time.time() - start
        log(f"tiny CLIP epoch {epoch}/{tc.epochs}: contrastive {sums['contrastive'] / seen:.3f}, "
            f"supervised {sums['supervised'] / seen:.3f} ({seen * epoch / elapsed:.0f} pairs/s)")
        if elapsed > tc.max_minutes * 60 and epoch < tc.epochs:
            log(f"tiny CLIP: stopping after {epoch} epochs, over vlm.train.max_minutes={tc.max_minutes}")
            break
    model.eval()
    return {"epochs": epoch, "seconds": time.time() - start}


@torch.no_grad()
def embed_images(vlm, images: torch.Tensor, *, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """L2-normalised image embeddings ``float32 (N, E)`` on the CPU."""
    vlm.to(device).eval()
    return torch.cat([vlm.encode_images(to_float(images[idx], device)).cpu()
                      for idx in minibatches(len(images), batch_size)])


@torch.no_grad()
def evaluate_clip(vlm, images: torch.Tensor, labels: np.ndarray, attributes: dict[str, np.ndarray], *,
                  device: torch.device) -> dict:
    """Zero-shot class accuracy and per-attribute-value retrieval AUROC.

    Retrieval scores an image for a value by the softmax over its group's prompts
    ("a photo of an object on water" vs "... on grass", ...), which lifts the worst values
    over raw cosine. ``class_prompt_max_cosine`` near 1 warns that class words collapsed.
    """
    emb = embed_images(vlm, images, device=device)
    class_text = vlm.encode_texts([caption(c, {}, set()) for c in CLASSES]).cpu()
    zero_shot = (emb @ class_text.T).argmax(1).numpy() == np.asarray(labels)
    sim = class_text @ class_text.T
    out = {"zero_shot_accuracy": float(zero_shot.mean()),
           "class_prompt_max_cosine": float((sim - 2 * torch.eye(len(CLASSES))).max()),
           "attribute_auroc": {}}
    for g in ATTRIBUTE_GROUPS:
        text = vlm.encode_texts([caption(None, {g.name: v}, {g.name}) for v in g.values]).cpu()
        probs = (100 * emb @ text.T).softmax(-1).numpy()
        for j, v in enumerate(g.values):
            truth = np.asarray(attributes[g.name]) == j
            if 0 < truth.sum() < len(truth):
                out["attribute_auroc"][f"{g.name}_{v}"] = float(roc_auc_score(truth, probs[:, j]))
    return out
