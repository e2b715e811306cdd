"""The runtime filter as a Ray Serve application: a FastAPI ingress in front of an autoscaled model.

``POST /predict`` takes images (multipart field ``files``, or JSON ``{"images": [base64, ...]}``)
and answers per image the classifier's ``label`` and ``confidence``, the filter's ``verdict``
(accept / likely-misclassified / likely-adversarial), both ``scores`` and the ``concepts`` behind
the verdict. ``POST /classify`` runs only the classifier (the filter's overhead is the
difference); ``GET /healthz`` answers once the model answers (asking it at most once per
``serve.health_interval_s``). OpenAPI docs at ``/docs`` and ``/openapi.json``, public (see
:data:`DOCS_URL`).

Two deployments:

* :class:`Ingress` (CPU): bearer-token auth (no token fails closed unless ``serve.allow_anonymous``),
  body-size limit, parsing and decoding of untrusted images (pixels per image and per request checked
  from the headers before any decoding; JSON nesting checked before parsing); every bad input is a 4xx
  with ``{"error": ...}``. It sends each decoded ``uint8 (S, S, 3)`` image to the model on its own, so
  images of concurrent requests share batches.
* :class:`FilterModel` (CPU or GPU): classifier + VLM (:class:`~conceptlens.models.embedding.Embedder`)
  and the :class:`~conceptlens.runtime.filter.ConceptFilter`, all from one bundle (a folder or
  ``models:/name@alias``, which carries the models' files); dynamic batching with :class:`Batcher`, which
  makes a batch when the model is free, so under load the images that arrived meanwhile share it;
  thresholds, concepts per answer and batching change without restart through ``user_config``
  (:meth:`FilterModel.reconfigure`).

:func:`build_app` binds both from a Config; :func:`app_builder` is the import path of
``serve/config.yaml`` (``serve deploy``, KubeRay RayService).
"""
# No `from __future__ import annotations` here: FastAPI reads the route signatures of the Serve
# ingress class (and the proxy builds the OpenAPI schema) from real annotation objects.
import asyncio
import base64
import binascii
import collections
import hmac
import io
import json
import logging
import os
import re
import time
from email import policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Callable, Literal, Optional

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
from conceptlens.runtime.failure_modes import FailureModes
from conceptlens.runtime.filter import HEADS, ConceptFilter
from conceptlens.runtime.registered import fetch_bundle


logger = logging.getLogger("ray.serve")

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # PIL decoders accepted from clients; fewer = less attack surface
INGRESS_NUM_CPUS = 0.25  # parsing and decoding 48 px images is light next to the models
USER_CONFIG_KEYS = ("thresholds", "top_concepts", "max_batch_size", "batch_wait_timeout_s")
LIMIT_KEYS = ("max_request_bytes", "max_image_pixels", "max_request_pixels", "max_images", "token_env",
              "allow_anonymous", "health_interval_s")  # the ServeConfig fields the ingress reads
MAX_JSON_DEPTH = 8  # {"images": [...]} is 2 deep; deeper bodies are refused before parsing (no RecursionError)
MAX_JSON_NUMBER = 32  # characters of one JSON number; the schema has no numbers, so longer ones are only a cost
JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)  # possessive: linear, never backtracks
NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
# /docs and /openapi.json are public on purpose: they describe the request and answer schemas, which this file
# and the README publish anyway, and nothing of a bundle (classes, concepts, thresholds) or of any data; the
# bearer token guards what runs the models (/predict, /classify). /healthz is public too ({"status": "ok"}).
DOCS_URL, OPENAPI_URL = "/docs", "/openapi.json"


# --- the answer ---------------------------------------------------------------------------------
class Scores(BaseModel):
    misclassified: float
    adversarial: Optional[float] = None  # absent when the bundle has no adversarial head (monitor ran before attack)


class Concept(BaseModel):
    concept: str
    text: str
    z: float
    typical_z: float


class LooksLike(BaseModel):
    """The known failure mode (root-cause cluster of `rootcause`) nearest to a flagged input."""
    close_enough: bool  # within the failure mode's radius: as close as 9 in 10 of its own calib members
    text: str  # "looks like: <validated sentence>", or "none close enough (nearest: ...)"
    cluster: Optional[int] = None  # the nearest failure mode of the predicted label; absent when it has none
    distance: Optional[float] = None  # in radii of that failure mode (≤ 1 = close enough)
    sentence: Optional[str] = None  # the cluster's validated sentence (`explain`), when it has one
    cluster_concepts: list[str] = []  # the concepts its root-cause card names


class Prediction(BaseModel):
    name: str
    label: str
    confidence: float
    verdict: Literal["accept", "likely-misclassified", "likely-adversarial"]
    scores: Scores
    concepts: list[Concept]
    looks_like: Optional[LooksLike] = None  # flagged inputs, when the bundle carries failure modes


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


def judge(filt: ConceptFilter, columns: dict, *, thresholds: dict | None = None, top: int = 3,
          modes: FailureModes | None = None) -> list[dict]:
    """Per input the answer of ``/predict`` (without ``name``) from the Embedder's columns of N inputs
    (``prediction (N,)``, ``confidence (N,)``, ``logits (N, K)``, ``features (N, D)``, ``vlm_embedding (N, E)``);
    a flagged input also gets ``looks_like``, the nearest of the bundle's failure ``modes``."""
    verdicts = filt.verdicts(columns, thresholds=thresholds)
    why = filt.explain(columns, top=top)
    answers = [{"label": filt.class_names[int(p)], "confidence": float(c), "verdict": str(verdicts["verdict"][i]),
                "scores": {h: float(verdicts[h][i]) for h in HEADS if h in verdicts}, "concepts": why[i]}
               for i, (p, c) in enumerate(zip(columns["prediction"], columns["confidence"]))]
    flagged = [i for i, a in enumerate(answers) if a["verdict"] != "accept"]
    if modes is not None and flagged:
        for i, match in zip(flagged, modes.match({k: np.asarray(v)[flagged] for k, v in columns.items()})):
            answers[i]["looks_like"] = looks_like(match)
    return answers


def looks_like(match: dict) -> dict:
    """A :meth:`FailureModes.match` answer in the words of the API (:class:`LooksLike`)."""
    if match["cluster"] is None:
        text = "none close enough (no known failure mode for this label)"
    elif not match["close_enough"]:
        text = f"none close enough (nearest: failure mode {match['cluster']}, {match['distance']:.1f} radii away)"
    else:
        text = "looks like: " + (match["sentence"] or f"failure mode {match['cluster']} ("
                                 f"{', '.join(match['concepts']) or 'no concept named'})")
    return {"close_enough": match["close_enough"], "text": text, "cluster": match["cluster"],
            "distance": match["distance"], "sentence": match["sentence"], "cluster_concepts": match["concepts"]}


# --- untrusted input ----------------------------------------------------------------------------
def bearer_token(token_env: str, allow_anonymous: bool) -> str | None:
    """The bearer token in the environment variable ``token_env``; unset or empty fails closed (ValueError)
    unless ``allow_anonymous``: then None, an open endpoint, and a warning in the log."""
    token = os.environ.get(token_env) or None
    if token is None and not allow_anonymous:
        raise ValueError(f"no bearer token: the environment variable {token_env} (serve.token_env) is unset or "
                         f"empty; set it, or set serve.allow_anonymous=true to serve anyone without a token")
    if token is None:
        logger.warning("conceptlens: %s is not set and serve.allow_anonymous is true: /predict and /classify "
                       "accept requests without a token", token_env)
    return token


def authorize(token: str | None, credentials: HTTPAuthorizationCredentials | None) -> None:
    """401 unless the bearer token matches; None (only with ``serve.allow_anonymous``) = open."""
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


def json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in a JSON text, brackets inside strings skipped; linear and vectorised,
    so it can run before parsing. At most ``limit`` opening brackets in all cannot nest deeper: then their
    count is the answer, without the scan (a request's base64 strings hold no brackets)."""
    opening = body.count(b"[") + body.count(b"{")
    if opening <= limit:
        return opening
    brackets = np.frombuffer(JSON_STRING.sub(b'""', body).translate(None, NOT_BRACKETS), np.uint8)
    step = ((brackets == ord("[")) | (brackets == ord("{"))).view(np.int8) * 2 - 1  # +1 opens, -1 closes
    return int(np.cumsum(step, dtype=np.int32).max(initial=0))


def _number(text: str) -> float:
    if len(text) > MAX_JSON_NUMBER:
        raise HTTPException(400, f"malformed JSON: a number of {len(text)} characters; at most {MAX_JSON_NUMBER}")
    return float(text)


def _constant(name: str) -> None:
    raise HTTPException(400, f"malformed JSON: {name} is not JSON")


def _from_json(body: bytes) -> list[tuple[str, bytes]]:
    if json_depth(body) > MAX_JSON_DEPTH:
        raise HTTPException(400, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels; "
                                 'expected {"images": ["<base64>", ...]}')
    try:
        doc = json.loads(body, parse_int=_number, parse_float=_number, parse_constant=_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"malformed JSON: {err}") from None
    if not isinstance(doc, dict):
        kind = {list: "an array", str: "a string", float: "a number", bool: "a boolean"}.get(type(doc), "null")
        raise HTTPException(400, f'the JSON body is {kind}, not an object; expected {{"images": ["<base64>", ...]}}')
    images = doc.get("images")
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


def open_upload(data: bytes, max_pixels: int, name: str = "image") -> Image.Image:
    """The image with only its header read: 413 when it announces more than ``max_pixels``, 400 when it is no
    image (of :data:`IMAGE_FORMATS`)."""
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as err:
        raise HTTPException(413, f"{name}: {err}") from None
    except Exception:  # whatever PIL raises on a hostile file is the client's problem, not a crash
        raise HTTPException(400, f"{name} is not an image ({', '.join(IMAGE_FORMATS)})") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise HTTPException(413, f"{name} has {width}x{height} pixels; at most {max_pixels}")
    return img


def to_array(img: Image.Image, size: int, name: str = "image") -> np.ndarray:
    """Decode an opened image to ``uint8 (size, size, 3)`` RGB, resized as
    :func:`conceptlens.models.embedding.decode_image` does; 400 when it is truncated or corrupt."""
    try:
        rgb = img.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.BILINEAR)
        return np.asarray(rgb)
    except Exception as err:
        raise HTTPException(400, f"{name} could not be decoded (truncated or corrupt): {type(err).__name__}") from None


def decode_upload(data: bytes, size: int, max_pixels: int, name: str = "image") -> np.ndarray:
    """One image: :func:`open_upload`, then :func:`to_array`."""
    with open_upload(data, max_pixels, name) as img:
        return to_array(img, size, name)


def decode_images(items: list[tuple[str, bytes]], size: int, limits: dict) -> list[np.ndarray]:
    """All images of a request: every header first (``max_image_pixels`` each, 413 when together they announce
    more than ``max_request_pixels``), and only then any decoding."""
    opened: list[Image.Image] = []
    try:
        for name, data in items:
            opened.append(open_upload(data, limits["max_image_pixels"], name))
        total, budget = sum(img.width * img.height for img in opened), limits["max_request_pixels"]
        if total > budget:
            raise HTTPException(413, f"the {len(opened)} images have {total} pixels together; at most {budget} "
                                     f"per request (serve.max_request_pixels)")
        return [to_array(img, size, name) for img, (name, _) in zip(opened, items)]
    finally:
        for img in opened:
            img.close()


def _decode_all(body: bytes, content_type: str, size: int, limits: dict) -> list[tuple[str, np.ndarray]]:
    items = parse_images(body, content_type, limits["max_images"])
    return list(zip([name for name, _ in items], decode_images(items, size, limits)))


# --- the model ------------------------------------------------------------------------------------
class Batcher:
    """Dynamic batching of one model function: ``await batcher(x)`` answers ``fn([..., x, ...])[i]``, with
    ``fn`` run in a thread so the event loop keeps taking inputs meanwhile.

    A batch is made when ``fn`` is free: every input waiting then (at most ``max_size``) and, while fewer,
    those that arrive until ``wait_s`` after the oldest one arrived. So a lone input waits ``wait_s`` at most,
    and under load the inputs that arrive while one batch runs make up the next. (``@serve.batch`` closes a
    batch ``wait_s`` after its first input even while the one before still runs, so under load it lines up
    many small batches: 1.4 images on average for 16 concurrent clients on 2 cores.)"""

    def __init__(self, fn: Callable[[list], list], max_size: int = 16, wait_s: float = 0.01):
        self.fn, self.max_size, self.wait_s = fn, max_size, wait_s
        self.waiting: collections.deque = collections.deque()  # (input, future, time.monotonic() of arrival)
        self.arrived: asyncio.Event | None = None  # made in the replica's event loop, with the worker task
        self.worker: asyncio.Task | None = None

    async def __call__(self, item: Any) -> Any:
        if self.worker is None:
            self.arrived = asyncio.Event()
            self.worker = asyncio.create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future, time.monotonic()))
        self.arrived.set()
        return await future

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        while not self.waiting:
            self.arrived.clear()
            await self.arrived.wait()
        deadline, batch = self.waiting[0][2] + self.wait_s, []
        while True:
            while self.waiting and len(batch) < self.max_size:
                item, future, _ = self.waiting.popleft()
                if not future.done():  # done = its caller gave up
                    batch.append((item, future))
            left = deadline - time.monotonic()
            if len(batch) >= self.max_size or left <= 0:
                return batch
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def _serve(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                answers = await asyncio.to_thread(self.fn, [item for item, _ in batch])
            except Exception as err:  # every caller of the batch gets the model's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)


@serve.deployment
class FilterModel:
    """Classifier, VLM and runtime filter of one bundle; batched ``predict`` and ``classify`` take one
    ``uint8 (S, S, 3)`` image per call and answer one dict."""

    def __init__(self, bundle: str, tracking_uri: Optional[str], device: str):
        folder = fetch_bundle(bundle, tracking_uri)
        self.filter = ConceptFilter.load(folder)
        self.modes = FailureModes.load_optional(folder)  # absent from bundles made before rootcause ran
        self.spec, self.image_size = bundle_models(folder)  # the models travel inside the bundle
        from conceptlens.models.embedding import Embedder  # torch only in the model replicas

        self.embedder = Embedder(self.spec, device)
        self.bundle = bundle
        self.thresholds, self.top = {}, 3
        self.batches = {"calls": 0, "images": 0, "largest": 0}
        self.health_checks = 0
        self.predicts = Batcher(lambda images: self._judge(np.stack(images)))
        self.labels = Batcher(lambda images: self._label(np.stack(images)))

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
        for batcher in (self.predicts, self.labels):
            batcher.max_size = int(config.get("max_batch_size", batcher.max_size))
            batcher.wait_s = float(config.get("batch_wait_timeout_s", batcher.wait_s))
        logger.info("conceptlens: thresholds %s, %d concepts per answer", self.filter.thresholds | self.thresholds,
                    self.top)

    def info(self) -> dict:
        """What this replica serves (for handles, not HTTP): bundle, image size, classes, the model files
        it loaded, thresholds in force, batch counts, how often :meth:`healthy` was asked and the replica's id."""
        return {"bundle": self.bundle, "image_size": self.image_size, "classes": self.filter.class_names,
                "models": {"classifier": self.spec.classifier_checkpoint, "vlm": self.spec.vlm_pretrained},
                "thresholds": self.filter.thresholds | self.thresholds, "batches": dict(self.batches),
                "health_checks": self.health_checks, "replica": serve.get_replica_context().replica_id.unique_id}

    def healthy(self) -> bool:
        """The ingress's ``/healthz`` probe: answering at all means the models are loaded."""
        self.health_checks += 1
        return True

    def _count(self, n: int) -> None:
        self.batches["calls"] += 1
        self.batches["images"] += n
        self.batches["largest"] = max(self.batches["largest"], n)

    def _judge(self, images: np.ndarray) -> list[dict]:
        self._count(len(images))
        return judge(self.filter, self.embedder.embed(images), thresholds=self.thresholds, top=self.top,
                     modes=self.modes)

    def _label(self, images: np.ndarray) -> list[dict]:
        import torch

        self._count(len(images))
        with torch.no_grad():
            x = torch.from_numpy(images).to(self.embedder.device).permute(0, 3, 1, 2).float().div_(255)
            confidence, prediction = self.embedder.classifier(x).softmax(-1).max(-1)
        return [{"label": self.filter.class_names[int(p)], "confidence": float(c)}
                for p, c in zip(prediction.cpu(), confidence.cpu())]

    async def predict(self, image: np.ndarray) -> dict:
        """Label, verdict, scores and concepts of one image, in a batch with concurrent calls."""
        return await self.predicts(image)

    async def classify(self, image: np.ndarray) -> dict:
        """The bare classifier's label and confidence of one image, in a batch with concurrent calls."""
        return await self.labels(image)


# --- the HTTP ingress -----------------------------------------------------------------------------
IMAGES_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"},
                   "description": "base64-encoded image files"}}}}}}}
ERRORS = {code: {"model": Error} for code in (400, 401, 413, 415, 422, 500, 503)}

api = FastAPI(title="ConceptLens runtime filter", docs_url=DOCS_URL, openapi_url=OPENAPI_URL, redoc_url=None,
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
        # checked again where the replica runs (its node's environment), also for `serve deploy` of a config
        self.token = bearer_token(limits["token_env"], limits["allow_anonymous"])
        self.image_size: int | None = None
        self.health: tuple[float, bool] | None = None  # (time.monotonic(), the model answered) of the last probe
        self.probe: asyncio.Task | None = None  # the probe in flight, shared by concurrent /healthz requests

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
        """``ok`` once the model replicas answer (asked at most once per ``serve.health_interval_s``)."""
        if not await self._model_answers():
            raise HTTPException(503, "the model is not ready")
        return {"status": "ok"}

    async def _model_answers(self) -> bool:
        """The last probe's result while it is younger than ``health_interval_s``, else a new probe's, which all
        requests arriving meanwhile await together."""
        if self.health is not None and time.monotonic() - self.health[0] < self.limits["health_interval_s"]:
            return self.health[1]
        if self.probe is None:
            self.probe = asyncio.ensure_future(self._probe())
        return await asyncio.shield(self.probe)  # a client that hangs up does not cancel the others' probe

    async def _probe(self) -> bool:
        try:
            answered = await asyncio.wait_for(self.model.healthy.remote(), timeout=10)
        except Exception:
            answered = False
        self.health, self.probe = (time.monotonic(), answered), None
        return answered


# --- binding --------------------------------------------------------------------------------------
def user_config(settings: ServeConfig) -> dict:
    """The model's hot-reloadable settings (Serve ``user_config``)."""
    return {"thresholds": dict(settings.thresholds), "top_concepts": settings.top_concepts,
            "max_batch_size": settings.max_batch_size, "batch_wait_timeout_s": settings.batch_wait_timeout_s}


def build_app(cfg) -> Application:
    """Ingress and model bound from a Config (``cfg.serve``, ``cfg.run``, ``cfg.mlflow``): the bundle is
    ``serve.bundle`` (a folder, or a registry URI in the store of ``mlflow.tracking_uri``, by default the
    one under ``run.root``), else the run's ``monitor/bundle``. Without a bearer token in ``serve.token_env``
    it raises ValueError before anything is deployed, unless ``serve.allow_anonymous``."""
    from conceptlens.pipeline.tracking import tracking_uri

    s = cfg.serve
    bearer_token(s.token_env, s.allow_anonymous)  # fail closed; the ingress checks again where it runs
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
    limits = {k: getattr(s, k) for k in LIMIT_KEYS}
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
