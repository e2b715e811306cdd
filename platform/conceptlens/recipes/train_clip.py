"""Train and evaluate a tiny CLIP on ConceptWorld's ``vlm`` split: a ladder of observers (``vlm.recipe``).

``supervised`` (below) is the upper bound: it is told every attribute. ``captions`` is what a real CLIP is: the
vision tower pre-trained on class labels only (a real CLIP knows objects), then both towers trained contrastively
on web captions (:mod:`conceptlens.recipes.web_captions`: few attributes mentioned, in varied words, some wrong,
some groups never). ``shifted`` is ``captions`` trained on a restyled world (:data:`conceptlens.world.render.STYLES`)
and used on the normal one.

The supervised recipe. Plain contrastive training on such a world learns colour, background and weather but not
the object's shape: the other attributes already tell captions apart within a batch, so the
text tower learns to ignore shape words (their prompts end up with cosine ≈ 1), and small
towers do not pick shape up at all in minutes. The recipe therefore has two phases:

1. **Supervised pre-training of the vision tower** on the ``vlm`` split's labels: linear
   heads on the image embedding for the class and every attribute group (the class weighing
   as much as all attributes together), thrown away afterwards.
2. **Locked-image text alignment** (LiT): the image embeddings are computed once and frozen;
   the text tower learns to match captions to them, contrastively and by classifying each
   image with its prompts ("a photo of a star", "a photo of an object in fog", ...). Half the
   captions name a random subset of the attributes (often the shape alone). Identical
   captions in a batch are positives of each other.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from conceptlens.config import TrainConfig, VLMConfig, VLMRecipe
from conceptlens.pipeline.runs import Progress
from conceptlens.recipes.data import counted, minibatches, to_float
from conceptlens.recipes.loop import train_loop
from conceptlens.recipes.web_captions import Phrasings, web_caption
from conceptlens.world.vocabulary import ATTRIBUTE_GROUPS, CLASSES, AttributeGroup, caption

Log = Callable[[str], None]


def training_caption(label: str, attributes: dict[str, str], subset_share: float, rng: np.random.Generator) -> str:
    """A full caption, or (with probability ``subset_share``) one naming a random subset of the attributes."""
    if rng.random() >= subset_share:
        return caption(label, attributes)
    include = {g.name for g in ATTRIBUTE_GROUPS if rng.random() < 0.3}
    return caption(label if rng.random() < 0.7 or not include else None, attributes, include)


def _targets(labels: np.ndarray, attributes: dict[str, np.ndarray],
             groups: tuple[AttributeGroup, ...] = ATTRIBUTE_GROUPS) -> dict[str, torch.Tensor]:
    return {"class": torch.as_tensor(labels)} | {g.name: torch.as_tensor(attributes[g.name]) for g in groups}


def _prompts(groups: tuple[AttributeGroup, ...] = ATTRIBUTE_GROUPS) -> dict[str, list[str]]:
    """The prompts of each class set and attribute group, in the order of ``_targets``."""
    return {"class": [caption(c, {}, set()) for c in CLASSES]} | {
        g.name: [caption(None, {g.name: v}, {g.name}) for v in g.values] for g in groups}


def _supervised(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Class cross-entropy and mean attribute cross-entropy, equally weighted: shape is the hard part."""
    class_ce, *attribute_ce = [F.cross_entropy(lg, t) for lg, t in zip(logits, targets)]
    return (class_ce + sum(attribute_ce) / len(attribute_ce)) / 2 if attribute_ce else class_ce


def _contrastive(logits: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE over an image × caption ``logits`` batch; identical captions are positives of each other."""
    codes = torch.as_tensor(np.unique(texts, return_inverse=True)[1], device=logits.device)
    same = (codes[:, None] == codes[None, :]).float()
    same = same / same.sum(1, keepdim=True)
    return -((same * logits.log_softmax(1)).sum(1).mean() + (same * logits.log_softmax(0)).sum(0).mean()) / 2


def _flipped(x: torch.Tensor) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def pretrain_vision(vlm, images: torch.Tensor, labels: np.ndarray, attributes: dict[str, np.ndarray],
                    tc: TrainConfig, *, device: torch.device, seed: int = 0, log: Log = print,
                    groups: tuple[AttributeGroup, ...] = ATTRIBUTE_GROUPS) -> dict:
    """Phase 1: supervised training of ``vlm.model.visual`` with throwaway linear heads, for the class and the
    attribute ``groups`` (none: class labels only, as a real CLIP's vision tower knows objects)."""
    visual = vlm.to(device).model.visual.train()
    targets = _targets(labels, attributes, groups)
    dim = vlm.model.text_projection.shape[1]
    heads = torch.nn.ModuleList(torch.nn.Linear(dim, len(p)) for p in _prompts(groups).values()).to(device)

    def step(idx):
        x = _flipped(to_float(images[idx], device))
        emb = visual(vlm.normalize(x).contiguous(memory_format=torch.channels_last))
        return _supervised([h(emb) for h in heads], [t[idx].to(device) for t in targets.values()])

    visual.to(memory_format=torch.channels_last)
    what = "" if groups else " on class labels only"
    info = train_loop(f"tiny CLIP vision pre-training{what}", len(images), tc, [*visual.parameters(), *heads.parameters()],
                      step, device=device, seed=seed, log=log, pct_start=0.15)
    visual.to(memory_format=torch.contiguous_format).eval()
    return info


def align_text(vlm, image_embeddings: torch.Tensor, labels: np.ndarray, attributes: dict[str, np.ndarray],
               cfg: VLMConfig, *, device: torch.device, seed: int = 0, log: Log = print) -> dict:
    """Phase 2: train the text tower (and temperature) against frozen image embeddings ``(N, E)``."""
    model = vlm.to(device).model
    model.train()
    vision_params = {id(p) for p in model.visual.parameters()}
    params = [p for p in model.parameters() if id(p) not in vision_params]
    targets, prompts = _targets(labels, attributes), _prompts()
    all_prompts, sizes = sum(prompts.values(), []), [len(p) for p in prompts.values()]
    rng = np.random.default_rng(seed)
    emb = image_embeddings.to(device)

    def step(idx):
        texts = [training_caption(CLASSES[labels[i]], {g.name: g.values[attributes[g.name][i]]
                                                        for g in ATTRIBUTE_GROUPS}, cfg.caption_subset, rng)
                 for i in idx.numpy()]
        tokens = vlm.tokenizer(texts + all_prompts).to(device)
        txt, *prompt_emb = F.normalize(model.encode_text(tokens), dim=-1).split([len(texts)] + sizes)
        img = emb[idx.to(device)]
        scale = model.logit_scale.exp().clamp(max=100)
        contrastive = _contrastive(scale * img @ txt.T, texts)
        supervised = _supervised([scale * img @ p.T for p in prompt_emb], [t[idx].to(device) for t in targets.values()])
        return contrastive + cfg.aux_weight * supervised

    info = train_loop("tiny CLIP text alignment", len(emb), cfg.align, params, step, device=device, seed=seed, log=log,
                      pct_start=0.15)
    model.eval()
    return info


def phrasings_of(cfg: VLMConfig) -> Phrasings:
    """The synonym list of ``vlm.captions.synonyms`` (default: the bundled one)."""
    return Phrasings.load(cfg.captions.synonyms) if cfg.captions.synonyms else Phrasings.load()


def unseen_groups(cfg: VLMConfig, phrasings: Phrasings | None = None) -> list[str]:
    """The attribute groups no caption mentions: ``vlm.captions.unseen``, else the synonym file's default."""
    if cfg.captions.unseen is not None:
        return list(cfg.captions.unseen)
    return (phrasings or phrasings_of(cfg)).unseen


def contrastive_captions(vlm, images: torch.Tensor, labels: np.ndarray, attributes: dict[str, np.ndarray],
                         cfg: VLMConfig, *, device: torch.device, seed: int = 0, log: Log = print) -> dict:
    """Both towers trained contrastively on web captions (:func:`~conceptlens.recipes.web_captions.web_caption`),
    resampled every time an image is seen: the only attribute signal is what the captions say."""
    model = vlm.to(device).model
    model.train()
    phrasings = phrasings_of(cfg)
    names = {g.name: g.values for g in ATTRIBUTE_GROUPS}
    rng = np.random.default_rng(seed)
    said = dict(mention=cfg.captions.mention, noise=cfg.captions.noise, unseen=tuple(unseen_groups(cfg, phrasings)),
                name_class=cfg.captions.name_class)

    def step(idx):
        texts = [web_caption(CLASSES[labels[i]], {g: v[attributes[g][i]] for g, v in names.items()}, phrasings, rng,
                             **said) for i in idx.numpy()]
        img = F.normalize(model.encode_image(vlm.normalize(_flipped(to_float(images[idx], device)))), dim=-1)
        txt = F.normalize(model.encode_text(vlm.tokenizer(texts).to(device)), dim=-1)
        return _contrastive(model.logit_scale.exp().clamp(max=100) * img @ txt.T, texts)

    info = train_loop("tiny CLIP contrastive training on web captions", len(images), cfg.contrastive,
                      list(model.parameters()), step, device=device, seed=seed, log=log, pct_start=0.15)
    model.eval()
    return info


def train_clip(vlm, images: torch.Tensor, labels: np.ndarray, attributes: dict[str, np.ndarray],
               cfg: VLMConfig, *, device: torch.device, seed: int = 0, log: Log = print) -> dict:
    """Train ``vlm`` (a :class:`conceptlens.models.VLM`) in place by ``cfg.recipe``: ``supervised`` in two phases
    (every attribute), ``captions`` and ``shifted`` (the caller passes the restyled images) on class labels, then
    web captions.

    ``images``: ``uint8 (N, 3, H, W)``; ``labels``: class indices ``(N,)``; ``attributes``: for
    each attribute group, the value index of every image ``(N,)``.
    """
    if cfg.recipe != VLMRecipe.supervised:
        unknown = sorted(set(unseen_groups(cfg)) - {g.name for g in ATTRIBUTE_GROUPS})
        if unknown:
            raise ValueError(f"vlm.captions.unseen: unknown group(s) {unknown}; groups are "
                             f"{[g.name for g in ATTRIBUTE_GROUPS]}")
        vision = pretrain_vision(vlm, images, labels, attributes, cfg.class_pretrain, device=device, seed=seed,
                                 log=log, groups=())
        text = contrastive_captions(vlm, images, labels, attributes, cfg, device=device, seed=seed, log=log)
        return {"recipe": cfg.recipe.value, "unseen": unseen_groups(cfg), "pretrain": vision,
                "contrastive": text}
    vision = pretrain_vision(vlm, images, labels, attributes, cfg.pretrain, device=device, seed=seed, log=log)
    embeddings = embed_images(vlm, images, device=device, progress=Progress(
        "tiny CLIP: image embeddings for the text alignment", len(images), unit="images", log=log).update)
    text = align_text(vlm, embeddings, labels, attributes, cfg, device=device, seed=seed, log=log)
    return {"pretrain": vision, "align": text}


@torch.no_grad()
def embed_images(vlm, images: torch.Tensor, *, device: torch.device, batch_size: int = 512,
                 progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """L2-normalised image embeddings ``float32 (N, E)`` on the CPU; ``progress`` gets each batch's size when it
    is done."""
    vlm.to(device).eval()
    return torch.cat([vlm.encode_images(to_float(images[idx], device)).cpu()
                      for idx in counted(minibatches(len(images), batch_size), progress)])
