"""The request and answer schemas of the HTTP API (Pydantic, for FastAPI and the OpenAPI docs)."""
# No `from __future__ import annotations`: FastAPI and Pydantic read real annotation objects.
from typing import Literal, Optional

from pydantic import BaseModel


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


IMAGES_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "byte"},
                   "description": "base64-encoded image files"}}}}}}}
ERRORS = {code: {"model": Error} for code in (400, 401, 413, 415, 422, 500, 503)}
