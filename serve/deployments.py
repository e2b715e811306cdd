"""The Serve deployment: one FastAPI ingress that holds the models and batches in its own process.

``FilterModel`` (CPU or GPU) takes HTTP from Serve's proxy, checks the bearer token and the limits, parses and
decodes the images (:mod:`serve.parsing`, in a thread) and hands each decoded image to its
:class:`~serve.model.ServedModel`, whose batchers make a batch of what arrived from concurrent requests while the
model was busy. A request crosses one hop (proxy -> replica): no second deployment, no handle call and no
serialisation of images between the parsing and the model. Replicas autoscale as a whole (HTTP, decoding,
model).
"""
# No `from __future__ import annotations` here: FastAPI reads the route signatures of the Serve ingress class
# (and the proxy builds the OpenAPI schema) from real annotation objects.
import asyncio
import logging
import time
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from conceptlens.serve.limits import authorize, bearer_token, read_body
from conceptlens.serve.parsing import decode_all
from conceptlens.serve.schemas import ERRORS, IMAGES_BODY, Error, Labels, Predictions

logger = logging.getLogger("ray.serve")

# /docs and /openapi.json are public on purpose: they describe the request and answer schemas, which this file
# and the README publish anyway, and nothing of a bundle (classes, concepts, thresholds) or of any data; the
# bearer token guards what runs the models (/predict, /classify). /healthz is public too ({"status": "ok"}).
DOCS_URL, OPENAPI_URL = "/docs", "/openapi.json"
INLINE_DECODE_BYTES = 64 * 1024  # bodies up to this size are parsed and decoded on the event loop, larger in a thread

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
class FilterModel:
    """Auth, limits, decoding and the models of one bundle (:class:`~serve.model.ServedModel`) in one replica.

    ``limits``: the ServeConfig fields of :data:`~serve.limits.LIMIT_KEYS`. The token is checked first, where the
    replica runs (its node's environment; also for ``serve deploy`` of a config): without one it raises before any
    model is loaded, unless ``allow_anonymous``."""

    def __init__(self, bundle: str, tracking_uri: Optional[str], device: str, limits: dict):
        self.limits = limits
        self.token = bearer_token(limits["token_env"], limits["allow_anonymous"])  # fail closed, before the models
        from conceptlens.serve.model import ServedModel  # torch only past the token check

        self.model = ServedModel(bundle, tracking_uri, device)
        self.health: Optional[tuple] = None  # (time.monotonic(), the model answered) of the last probe

    def reconfigure(self, config: dict) -> None:
        """``user_config`` (:meth:`ServedModel.reconfigure`): thresholds, concepts per answer, batching."""
        self.model.reconfigure(config)

    def info(self) -> dict:
        """What this replica serves (for handles, not HTTP): :meth:`ServedModel.info` and the replica's id."""
        return self.model.info() | {"replica": serve.get_replica_context().replica_id.unique_id}

    async def _images(self, request: Request, credentials) -> list:
        authorize(self.token, credentials)
        body = await read_body(request, self.limits["max_request_bytes"])
        args = (body, request.headers.get("content-type", ""), self.model.image_size, self.limits)
        if len(body) <= INLINE_DECODE_BYTES:  # a thread hop costs more than parsing and decoding a small body
            return decode_all(*args)
        return await asyncio.to_thread(decode_all, *args)

    async def _ask(self, method: str, images: list) -> list:
        call = getattr(self.model, method)
        try:
            answers = await asyncio.gather(*(call(image) for _, image in images))
        except Exception:  # the model raised: a bug or a bundle that does not fit the code
            logger.exception("conceptlens: the model failed")
            raise HTTPException(500, "internal error in the model") from None
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
        """``ok`` once the replica's models are loaded (the model asked at most once per
        ``serve.health_interval_s``)."""
        if self.health is None or time.monotonic() - self.health[0] >= self.limits["health_interval_s"]:
            try:
                self.health = (time.monotonic(), self.model.healthy())
            except Exception:
                self.health = (time.monotonic(), False)
        if not self.health[1]:
            raise HTTPException(503, "the model is not ready")
        return {"status": "ok"}
