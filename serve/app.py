"""The runtime filter as a Ray Serve application: a FastAPI ingress in front of an autoscaled model.

``POST /predict`` takes images (multipart field ``files``, or JSON ``{"images": [base64, ...]}``)
and answers per image the classifier's ``label`` and ``confidence``, the filter's ``verdict``
(accept / likely-misclassified / likely-adversarial), both ``scores`` and the ``concepts`` behind
the verdict. ``POST /classify`` runs only the classifier (the filter's overhead is the
difference); ``GET /healthz`` answers once the model answers. OpenAPI docs at ``/docs``.

Two deployments:

* :class:`Ingress` (CPU): bearer-token auth, body-size limit, parsing and decoding of untrusted
  images (pixel count checked from the header before decoding); every bad input is a 4xx with
  ``{"error": ...}``. It sends each decoded ``uint8 (S, S, 3)`` image to the model on its own, so
  images of concurrent requests share batches.
* :class:`FilterModel` (CPU or GPU): classifier + VLM (:class:`~conceptlens.models.embedding.Embedder`)
  and the :class:`~conceptlens.runtime.filter.ConceptFilter`, all from one bundle (a folder or
  ``models:/name@alias``, which carries the models' files); dynamic batching with ``@serve.batch``; thresholds, concepts per answer
  and batching change without restart through ``user_config`` (:meth:`FilterModel.reconfigure`).

:func:`build_app` binds both from a Config; :func:`app_builder` is the import path of
``serve/config.yaml`` (``serve deploy``, KubeRay RayService).
"""
# No `from __future__ import annotations` here: FastAPI reads the route signatures of the Serve
# ingress class (and the proxy builds the OpenAPI schema) from real annotation objects.
import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import os
from email import policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from pydantic import BaseModel
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from conceptlens.config import ServeConfig
from conceptlens.pipeline.registry import is_registry_uri
from conceptlens.runtime.bundle import bundle_models
from conceptlens.runtime.filter import HEADS, ConceptFilter
from conceptlens.runtime.registered import fetch_bundle

logger = logging.getLogger("ray.serve")

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # PIL decoders accepted from clients; fewer = less attack surface
INGRESS_NUM_CPUS = 0.25  # parsing and decoding 48 px images is light next to the models
USER_CONFIG_KEYS = ("thresholds", "top_concepts", "max_batch_size", "batch_wait_timeout_s")


# --- the answer ---------------------------------------------------------------------------------
class Scores(BaseModel):
    misclassified: float
    adversarial: Optional[float] = None  # absent when the bundle has no adversarial head (monitor ran before attack)


class Concept(BaseModel):
    concept: str
    text: str
    z: float
    typical_z: float


class Prediction(BaseModel):
    name: str
    label: str
    confidence: float
    verdict: Literal["accept", "likely-misclassified", "likely-adversarial"]
    scores: Scores
    concepts: list[Concept]


class Predictions(BaseModel):
    predictions: list[Prediction]


class Label(BaseModel):
    name: str
    label: str
    confidence: float


class Labels(BaseModel):
    predictions: list[Label]


class Error(BaseModel):
    error: str


def judge(filt: ConceptFilter, columns: dict, *, thresholds: dict | None = None, top: int = 3) -> list[dict]:
    """Per input the answer of ``/predict`` (without ``name``) from the Embedder's columns of N inputs
    (``prediction (N,)``, ``confidence (N,)``, ``logits (N, K)``, ``features (N, D)``, ``vlm_embedding (N, E)``)."""
    verdicts = filt.verdicts(columns, thresholds=thresholds)
    why = filt.explain(columns, top=top)
    return [{"label": filt.class_names[int(p)], "confidence": float(c), "verdict": str(verdicts["verdict"][i]),
             "scores": {h: float(verdicts[h][i]) for h in HEADS if h in verdicts}, "concepts": why[i]}
            for i, (p, c) in enumerate(zip(columns["prediction"], columns["confidence"]))]


# --- untrusted input ----------------------------------------------------------------------------
def authorize(token: str | None, credentials: HTTPAuthorizationCredentials | None) -> None:
    """401 unless the bearer token matches; no token configured = open."""
    if token is None:
        return
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it (or its declared length) exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, "bad Content-Length")
    if declared is not None and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _from_json(body: bytes) -> list[tuple[str, bytes]]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"malformed JSON: {err}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise HTTPException(422, 'expected {"images": ["<base64>", ...]}')
    out = []
    for i, text in enumerate(images):
        if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
            text = text.split(",", 1)[1]
        try:
            out.append((f"images[{i}]", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise HTTPException(400, f"images[{i}] is not valid base64") from None
    return out


def _from_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    # the standard library's MIME parser: no python-multipart dependency, binary-safe
    message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") +
                                                          b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise HTTPException(400, "malformed multipart body")
    out = []
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "files":
            out.append((part.get_filename() or f"files[{len(out)}]", part.get_payload(decode=True) or b""))
    return out


def parse_images(body: bytes, content_type: str, max_images: int) -> list[tuple[str, bytes]]:
    """``(name, encoded image)`` pairs from a multipart (field ``files``) or JSON (``images``) body."""
    header = Message()
    header["content-type"] = content_type or "application/octet-stream"
    kind = header.get_content_type()
    if kind == "application/json":
        items = _from_json(body)
    elif kind == "multipart/form-data":
        items = _from_multipart(body, content_type)
    else:
        raise HTTPException(415, "send multipart/form-data with field 'files', or application/json "
                                 '{"images": ["<base64>", ...]}')
    if not items:
        raise HTTPException(422, "no images: multipart field 'files' or JSON 'images' is missing or empty")
    if len(items) > max_images:
        raise HTTPException(413, f"{len(items)} images; at most {max_images} per request")
    return items


def decode_upload(data: bytes, size: int, max_pixels: int, name: str = "image") -> np.ndarray:
    """``uint8 (size, size, 3)`` RGB resized as :func:`conceptlens.models.embedding.decode_image` does;
    413 when the header announces more than ``max_pixels``, 400 when it is no image or is corrupt."""
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as err:
        raise HTTPException(413, f"{name}: {err}") from None
    except Exception:  # whatever PIL raises on a hostile file is the client's problem, not a crash
        raise HTTPException(400, f"{name} is not an image ({', '.join(IMAGE_FORMATS)})") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise HTTPException(413, f"{name} has {width}x{height} pixels; at most {max_pixels}")
        try:
            rgb = img.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BILINEAR)
            return np.asarray(rgb)
        except Exception as err:
            raise HTTPException(400, f"{name} could not be decoded (truncated or corrupt): "
                                     f"{type(err).__name__}") from None


def _decode_all(body: bytes, content_type: str, size: int, limits: dict) -> list[tuple[str, np.ndarray]]:
    items = parse_images(body, content_type, limits["max_images"])
    return [(name, decode_upload(data, size, limits["max_image_pixels"], name)) for name, data in items]


# --- the model ------------------------------------------------------------------------------------
@serve.deployment
class FilterModel:
    """Classifier, VLM and runtime filter of one bundle; batched ``predict`` and ``classify`` take one
    ``uint8 (S, S, 3)`` image per call and answer one dict."""

    def __init__(self, bundle: str, tracking_uri: Optional[str], device: str):
        from conceptlens.models.embedding import Embedder

        folder = fetch_bundle(bundle, tracking_uri)
        self.filter = ConceptFilter.load(folder)
        self.spec, self.image_size = bundle_models(folder)  # the models travel inside the bundle
        self.embedder = Embedder(self.spec, device)
        self.bundle = bundle
        self.thresholds, self.top = {}, 3
        self.batches = {"calls": 0, "images": 0, "largest": 0}

    def reconfigure(self, config: dict) -> None:
        """``user_config``: ``thresholds`` {misclassified, adversarial} in [0, 1] (missing = the bundle's),
        ``top_concepts``, ``max_batch_size``, ``batch_wait_timeout_s``."""
        unknown = set(config) - set(USER_CONFIG_KEYS)
        thresholds = dict(config.get("thresholds") or {})
        if unknown or set(thresholds) - set(HEADS):
            raise ValueError(f"user_config takes {USER_CONFIG_KEYS} with thresholds for {HEADS}; got {config}")
        if not all(0.0 <= float(v) <= 1.0 for v in thresholds.values()):
            raise ValueError(f"thresholds must lie in [0, 1]: {thresholds}")
        self.thresholds = {k: float(v) for k, v in thresholds.items()}
        self.top = int(config.get("top_concepts", 3))
        for method in (self.predict, self.classify):
            if "max_batch_size" in config:
                method.set_max_batch_size(int(config["max_batch_size"]))
            if "batch_wait_timeout_s" in config:
                method.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))
        logger.info("conceptlens: thresholds %s, %d concepts per answer", self.filter.thresholds | self.thresholds,
                    self.top)

    def info(self) -> dict:
        """What this replica serves (for handles, not HTTP): bundle, image size, classes, the model files
        it loaded, thresholds in force, batch counts and the replica's id."""
        return {"bundle": self.bundle, "image_size": self.image_size, "classes": self.filter.class_names,
                "models": {"classifier": self.spec.classifier_checkpoint, "vlm": self.spec.vlm_pretrained},
                "thresholds": self.filter.thresholds | self.thresholds, "batches": dict(self.batches),
                "replica": serve.get_replica_context().replica_id.unique_id}

    def _count(self, n: int) -> None:
        self.batches["calls"] += 1
        self.batches["images"] += n
        self.batches["largest"] = max(self.batches["largest"], n)

    def _judge(self, images: np.ndarray) -> list[dict]:
        self._count(len(images))
        return judge(self.filter, self.embedder.embed(images), thresholds=self.thresholds, top=self.top)

    def _label(self, images: np.ndarray) -> list[dict]:
        import torch

        self._count(len(images))
        with torch.no_grad():
            x = torch.from_numpy(images).to(self.embedder.device).permute(0, 3, 1, 2).float().div_(255)
            confidence, prediction = self.embedder.classifier(x).softmax(-1).max(-1)
        return [{"label": self.filter.class_names[int(p)], "confidence": float(c)}
                for p, c in zip(prediction.cpu(), confidence.cpu())]

    # the models run in a thread so the replica keeps accepting (and batching) requests meanwhile
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def predict(self, images: list[np.ndarray]) -> list[dict]:
        return await asyncio.to_thread(self._judge, np.stack(images))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def classify(self, images: list[np.ndarray]) -> list[dict]:
        return await asyncio.to_thread(self._label, np.stack(images))


# --- the HTTP ingress -----------------------------------------------------------------------------
IMAGES_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"},
                   "description": "base64-encoded image files"}}}}}}}
ERRORS = {code: {"model": Error} for code in (400, 401, 413, 415, 422, 500, 503)}

api = FastAPI(title="ConceptLens runtime filter",
              description="Flags images the classifier likely gets wrong or that are likely adversarial, "
                          "and names the concepts behind the verdict.")
bearer = HTTPBearer(auto_error=False, description="the token in the server's token environment variable")


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=getattr(err, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": str(err.errors())[:500]}, status_code=422)


@api.exception_handler(Exception)
async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    return JSONResponse({"error": "internal error"}, status_code=500)


@serve.deployment
@serve.ingress(api)
class Ingress:
    """Auth, limits and decoding in front of :class:`FilterModel`."""

    def __init__(self, model: DeploymentHandle, limits: dict):
        self.model, self.limits = model, limits
        self.token = os.environ.get(limits["token_env"]) or None
        if self.token is None:
            logger.warning("conceptlens: %s is not set; /predict and /classify accept requests without a token",
                           limits["token_env"])
        self.image_size: int | None = None

    async def _images(self, request: Request, credentials) -> list[tuple[str, np.ndarray]]:
        authorize(self.token, credentials)
        body = await read_body(request, self.limits["max_request_bytes"])
        if self.image_size is None:
            try:
                self.image_size = (await self.model.info.remote())["image_size"]
            except Exception:
                raise HTTPException(503, "the model is not ready; retry") from None
        return await asyncio.to_thread(_decode_all, body, request.headers.get("content-type", ""),
                                       self.image_size, self.limits)

    @staticmethod
    async def _call(method, image: np.ndarray) -> dict:
        try:
            return await method.remote(image)
        except RayActorError:  # the replica died mid-call; answers are pure, so one retry elsewhere is safe
            logger.warning("conceptlens: a model replica died during a call; retrying once")
            return await method.remote(image)

    async def _ask(self, method: str, images: list[tuple[str, np.ndarray]]) -> list[dict]:
        call = getattr(self.model, method)
        try:
            answers = await asyncio.gather(*(self._call(call, image) for _, image in images))
        except RayTaskError:  # the model raised: a bug or a bundle that does not fit the code
            logger.exception("conceptlens: the model failed")
            raise HTTPException(500, "internal error in the model") from None
        except Exception:  # a replica died, was overloaded or is still starting
            logger.exception("conceptlens: the model is unavailable")
            raise HTTPException(503, "the model is unavailable; retry") from None
        return [{"name": name} | answer for (name, _), answer in zip(images, answers)]

    @api.post("/predict", response_model=Predictions, response_model_exclude_none=True, responses=ERRORS,
              openapi_extra=IMAGES_BODY)
    async def predict(self, request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)):
        """Label, verdict, scores and concepts per image."""
        return {"predictions": await self._ask("predict", await self._images(request, credentials))}

    @api.post("/classify", response_model=Labels, responses=ERRORS, openapi_extra=IMAGES_BODY)
    async def classify(self, request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)):
        """The bare classifier's label and confidence per image, without the filter."""
        return {"predictions": await self._ask("classify", await self._images(request, credentials))}

    @api.get("/healthz", responses={503: {"model": Error}})
    async def healthz(self):
        """``ok`` once the model replicas answer."""
        try:
            await asyncio.wait_for(self.model.info.remote(), timeout=10)
        except Exception:
            raise HTTPException(503, "the model is not ready") from None
        return {"status": "ok"}


# --- binding --------------------------------------------------------------------------------------
def user_config(settings: ServeConfig) -> dict:
    """The model's hot-reloadable settings (Serve ``user_config``)."""
    return {"thresholds": dict(settings.thresholds), "top_concepts": settings.top_concepts,
            "max_batch_size": settings.max_batch_size, "batch_wait_timeout_s": settings.batch_wait_timeout_s}


def build_app(cfg) -> Application:
    """Ingress and model bound from a Config (``cfg.serve``, ``cfg.run``, ``cfg.mlflow``): the bundle is
    ``serve.bundle`` (a folder, or a registry URI in the store of ``mlflow.tracking_uri``, by default the
    one under ``run.root``), else the run's ``monitor/bundle``."""
    from conceptlens.pipeline.tracking import tracking_uri

    s = cfg.serve
    bundle = s.bundle or str(Path(cfg.run.root) / cfg.run.name / "monitor" / "bundle")
    registry = is_registry_uri(bundle)
    bundle = bundle if registry else str(Path(bundle).resolve())
    device = cfg.run.device if cfg.run.device != "auto" else ("cuda" if s.num_gpus > 0 else "cpu")
    scaling = {"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
               "target_ongoing_requests": s.target_ongoing_requests}
    model = FilterModel.options(
        autoscaling_config=scaling, max_ongoing_requests=max(s.max_ongoing_requests, s.max_batch_size),
        ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus}, user_config=user_config(s),
    ).bind(bundle, tracking_uri(cfg) if registry else None, device)
    limits = {k: getattr(s, k) for k in ("max_request_bytes", "max_image_pixels", "max_images", "token_env")}
    # the ingress only awaits the model, so it holds many more requests than a model replica
    ingress_scaling = scaling | {"min_replicas": 1, "target_ongoing_requests": 4 * s.target_ongoing_requests}
    return Ingress.options(autoscaling_config=ingress_scaling, max_ongoing_requests=4 * s.max_ongoing_requests,
                           ray_actor_options={"num_cpus": INGRESS_NUM_CPUS}).bind(model, limits)


def app_builder(args: dict) -> Application:
    """The import path of ``serve/config.yaml``: ``args`` ``config`` (YAML files), ``overrides``
    (``key=value``) and ``serve`` (ServeConfig fields) build the Config of :func:`build_app`."""
    from omegaconf import OmegaConf

    from conceptlens.config import load_config

    cfg = load_config(list(args.get("config", [])), list(args.get("overrides", [])))
    merged = OmegaConf.merge(OmegaConf.structured(cfg.serve), dict(args.get("serve") or {}))
    cfg.serve = OmegaConf.to_object(merged)
    return build_app(cfg)
