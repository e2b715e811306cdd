"""Auth and limits of untrusted requests: the bearer token (fails closed), the body-size limit."""
from __future__ import annotations

import hmac
import logging
import os

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

logger = logging.getLogger("ray.serve")

LIMIT_KEYS = ("max_request_bytes", "max_image_pixels", "max_request_pixels", "max_images", "token_env",
              "allow_anonymous", "health_interval_s")  # the ServeConfig fields the HTTP side reads


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
