"""Vision-language models (open_clip) and concept banks.

A VLM is any open_clip architecture with a pretrained tag, a local checkpoint or a custom
model config. Configs shipped in ``models/configs/`` (the tiny ConceptWorld CLIP) are
registered on import.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from conceptlens.models.offline import hub_offline, reachable
from conceptlens.models.preprocess import Standardize, input_transform

CONFIG_DIR = Path(__file__).parent / "configs"
HUB_HOST = "huggingface.co"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
open_clip.add_model_config(CONFIG_DIR)


class VLM(nn.Module):
    """An open_clip model with image and text embedding. Images: float in [0, 1], ``(N, 3, H, W)``, any size.

    ``model``: the open_clip model; ``tokenizer``: its tokenizer (``list[str]`` -> ``int64 (N, L)``);
    ``image_size``: the side images are resized to; ``preprocess``: the module mapping [0, 1] pixels to the vision
    tower's input (:mod:`conceptlens.models.preprocess`).
    """

    def __init__(self, model: nn.Module, tokenizer, image_size: int, preprocess: nn.Module):
        super().__init__()
        self.model, self.tokenizer, self.image_size, self.preprocess = model, tokenizer, image_size, preprocess

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The pixels the vision tower expects: ``x`` resized (bilinear, antialiased) to
        ``(N, 3, image_size, image_size)`` and standardised."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return self.preprocess(x)

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``float32 (N, E)`` of float images ``(N, 3, H, W)`` in [0, 1]."""
        return F.normalize(self.model.encode_image(self.normalize(x)).float(), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``float32 (N, E)``; tokens go to the model's device."""
        tokens = self.tokenizer(list(texts)).to(next(self.model.parameters()).device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def register_model_config(path: str | os.PathLike) -> str:
    """Register a custom open_clip model config (JSON); returns its architecture name (the file stem)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VLM model config {path} does not exist")
    open_clip.add_model_config(path)
    return path.stem


def _load_checkpoint(model: nn.Module, path: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if any(k.startswith("model.") for k in state):  # a whole VLM's state dict
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(state)


def _create_pretrained(arch: str, tag: str) -> nn.Module:
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise ValueError(f"vlm.pretrained={tag!r} is neither a checkpoint file nor a pretrained tag of {arch}; "
                         f"tags: {tags}")
    # open_clip 3 only warns when a tag was trained with QuickGELU (OpenAI's) and the config lacks it
    quick_gelu = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    if reachable(HUB_HOST):
        return open_clip.create_model(arch, pretrained=tag, force_quick_gelu=quick_gelu)
    try:
        with hub_offline():  # a cached copy still loads; without this, open_clip retries the hub for ~46 s
            return open_clip.create_model(arch, pretrained=tag, force_quick_gelu=quick_gelu)
    except RuntimeError as err:
        raise RuntimeError(f"pretrained weights {tag!r} for {arch} are not cached and the network is unreachable; "
                           f"pass vlm.pretrained=/path/to/checkpoint.pt (a local open_clip state dict)") from err


class _DropRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init(active: bool):
    """Without open_clip's "Model initialized randomly" warning while ``active`` (a checkpoint loads next)."""
    drop = _DropRandomInit()
    if active:
        logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def build_vlm(arch: str, *, pretrained: str | os.PathLike | None = None,
              model_config: str | os.PathLike | None = None, preprocess: str | None = None) -> VLM:
    """An open_clip model (in eval mode) by architecture name.

    ``pretrained``: a checkpoint file (an open_clip state dict, raw or under ``"state_dict"``, e.g. from
    :func:`save_vlm`) or an open_clip pretrained tag such as ``"openai"``; None: random init.
    ``model_config``: a custom open_clip config (JSON) to register; its file stem is then the architecture.
    ``preprocess``: a spec of :mod:`conceptlens.models.preprocess`; None = the mean/std of open_clip's config.
    """
    if model_config:
        arch = register_model_config(model_config)
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models()); "
                         f"pass vlm.model_config=FILE for a custom one")
    pretrained = os.fspath(pretrained) if pretrained else None
    is_file = pretrained is not None and (Path(pretrained).is_file() or os.sep in pretrained
                                          or Path(pretrained).suffix in CHECKPOINT_SUFFIXES)
    if is_file and not Path(pretrained).is_file():
        raise FileNotFoundError(f"VLM checkpoint {pretrained} does not exist")
    if pretrained and not is_file:
        model = _create_pretrained(arch, pretrained)
    else:
        with _quiet_random_init(is_file):  # open_clip warns "initialized randomly" before the checkpoint loads
            model = open_clip.create_model(arch)
    if is_file:
        _load_checkpoint(model, pretrained)
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]  # not a truth column: open_clip's config
    transform = input_transform(preprocess) if preprocess else Standardize(cfg["mean"], cfg["std"])
    return VLM(model, open_clip.get_tokenizer(arch), size, transform).eval()


def save_vlm(vlm: VLM, path: str | os.PathLike) -> None:
    """Write ``vlm.model.state_dict()``: ``build_vlm(arch, pretrained=path)`` reloads it."""
    torch.save(vlm.model.state_dict(), path)


class ConceptBank:
    """Concepts as text embeddings: each concept is the L2-normalised mean of its prompts' normalised embeddings.

    ``names``: the C concept names; ``embeddings``: ``float32 (C, E)`` on the CPU.
    """

    def __init__(self, names: Sequence[str], embeddings: torch.Tensor):
        self.names, self.embeddings = list(names), embeddings

    @classmethod
    @torch.no_grad()
    def from_prompts(cls, vlm: VLM, prompts: dict[str, list[str]]) -> "ConceptBank":
        """``prompts``: concept name -> its prompts."""
        embeddings = [F.normalize(vlm.encode_texts(texts).mean(0), dim=-1) for texts in prompts.values()]
        return cls(list(prompts), torch.stack(embeddings).cpu())

    @classmethod
    def from_templates(cls, vlm: VLM, names: dict[str, str] | Sequence[str], templates: Sequence[str]) -> "ConceptBank":
        """``names``: concept name -> phrase (a list means phrase = name); ``templates`` like ``"a photo of {}."``."""
        phrases = names if isinstance(names, dict) else {n: n for n in names}
        return cls.from_prompts(vlm, {n: [t.format(p) for t in templates] for n, p in phrases.items()})

    def scores(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``(N, C)`` of L2-normalised image embeddings ``(N, E)`` to each concept."""
        return image_embeddings @ self.embeddings.to(image_embeddings.device, image_embeddings.dtype).T
