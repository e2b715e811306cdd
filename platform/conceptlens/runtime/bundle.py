"""The filter bundle on disk: the concept filter together with the models it judges, in one folder that travels.

``<bundle>/filter.json`` + ``filter.npz`` (:meth:`ConceptFilter.save`, class names included) and
``<bundle>/models/``: the classifier checkpoint, the VLM checkpoint and the VLM's open_clip model config,
copied from wherever the run found them. ``filter.json``'s ``metadata`` names them by paths relative to
the bundle, with the architectures, the classifier's head and class count, the image size and each
model's fingerprint; weights given as a tag (torchvision ``weights``, an open_clip tag such as
``openai``) stay tags. Nothing in a bundle refers to the machine it was made on.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from conceptlens.models.embedding import ModelSpec
from conceptlens.models.preprocess import DEFAULT
from conceptlens.models.vlm import CONFIG_DIR
from conceptlens.runtime.filter import ConceptFilter

MODELS = "models"


def _carry(path: str | None, folder: Path, name: str) -> str | None:
    """A model file copied into ``folder/models/name`` (returns its path relative to ``folder``); a tag as it is."""
    if not path or not Path(path).is_file():
        return path
    target = folder / MODELS / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    return target.relative_to(folder).as_posix()


def vlm_config_file(spec: ModelSpec) -> str | None:
    """The open_clip config of the spec's VLM: the custom file, or ConceptLens's own (e.g. the tiny CLIP);
    None for an architecture open_clip ships."""
    if spec.vlm_model_config:
        return spec.vlm_model_config
    shipped = CONFIG_DIR / f"{spec.vlm_arch}.json"
    return str(shipped) if shipped.is_file() else None


def save_bundle(filt: ConceptFilter, folder: str | Path, spec: ModelSpec, *, image_size: int, run: str) -> Path:
    """Write ``filt`` and the models of ``spec`` to ``folder`` (emptied first); returns ``folder``."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    config = vlm_config_file(spec)
    fingerprint = spec.fingerprint()
    metadata = {
        "run": run, "image_size": int(image_size),
        "classifier": {"arch": spec.classifier_arch, "weights": spec.classifier_weights, "head": spec.classifier_head,
                       "num_classes": spec.num_classes, "hash": fingerprint["classifier"],
                       "preprocess": spec.classifier_preprocess,
                       "checkpoint": _carry(spec.classifier_checkpoint, folder,
                                            f"classifier{Path(spec.classifier_checkpoint or '').suffix}")},
        "vlm": {"arch": Path(config).stem if config else spec.vlm_arch, "hash": fingerprint["vlm"],
                "preprocess": spec.vlm_preprocess,
                "pretrained": _carry(spec.vlm_pretrained, folder, f"vlm{Path(spec.vlm_pretrained or '').suffix}"),
                # open_clip names a custom architecture after its config file
                "model_config": _carry(config, folder, Path(config).name) if config else None},
    }
    return filt.save(folder, metadata=metadata)


def bundle_models(folder: str | Path) -> tuple[ModelSpec, int]:
    """The models a bundle carries (paths inside ``folder``) and the image size they take."""
    folder = Path(folder)
    meta = json.loads((folder / "filter.json").read_text()).get("metadata") or {}
    if not {"image_size", "classifier", "vlm"} <= set(meta):
        raise ValueError(f"the bundle in {folder} lacks model metadata (image_size, classifier, vlm); "
                         f"re-run `conceptlens monitor`")
    clf, vlm = meta["classifier"], meta["vlm"]

    def local(path: str | None, tag: bool) -> str | None:
        if not path or (tag and not path.startswith(f"{MODELS}/") and not Path(path).is_absolute()):
            return path  # a tag such as `openai`
        found = folder / path  # absolute paths (bundles made before models travelled) stay as they are
        if not found.is_file():
            raise FileNotFoundError(f"the bundle in {folder} names the model file {path}, which does not exist; "
                                    f"re-run `conceptlens monitor` to make a bundle that carries its models")
        return str(found)

    spec = ModelSpec(clf["arch"], local(clf.get("checkpoint"), False), clf["head"], clf["num_classes"],
                     vlm["arch"], local(vlm.get("pretrained"), True), local(vlm.get("model_config"), False),
                     clf.get("weights"), clf.get("preprocess") or DEFAULT, vlm.get("preprocess"))
    return spec, int(meta["image_size"])
