"""Parsing and decoding of untrusted request bodies: multipart or JSON with base64 images, JSON nesting and
number sizes checked before parsing, pixels per image and per request checked from the headers before any
decoding; every bad input is an ``HTTPException`` with a 4xx status."""
from __future__ import annotations

import base64
import binascii
import io
import json
import re
from email import policy
from email.message import Message
from email.parser import BytesParser

import numpy as np
from fastapi import HTTPException
from PIL import Image

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # PIL decoders accepted from clients; fewer = less attack surface
MAX_JSON_DEPTH = 8  # {"images": [...]} is 2 deep; deeper bodies are refused before parsing (no RecursionError)
MAX_JSON_NUMBER = 32  # characters of one JSON number; the schema has no numbers, so longer ones are only a cost
JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)  # possessive: linear, never backtracks
NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


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


def _multipart_by_email(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    # the standard library's MIME parser: no python-multipart dependency, binary-safe, tolerant (bare LF lines)
    message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") +
                                                          b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise HTTPException(400, "malformed multipart body")
    out = []
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "files":
            out.append((part.get_filename() or f"files[{len(out)}]", part.get_payload(decode=True) or b""))
    return out


def _part(piece: bytes) -> tuple[Message, bytes] | None:
    """One part of a well-formed (CRLF) multipart body after its delimiter: its headers and content, or None."""
    piece = piece.lstrip(b" \t")  # transport padding after the delimiter
    if not piece.startswith(b"\r\n"):
        return None
    head, found, content = piece[2:].partition(b"\r\n\r\n")
    if not found:
        head, content = (b"", piece[4:]) if piece.startswith(b"\r\n\r\n") else (None, b"")
        if head is None:
            return None
    headers = Message()  # compat32 parameters, RFC 2231 filenames included
    for line in head.decode("utf-8", "surrogateescape").split("\r\n") if head else ():
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or name != name.strip():
            return None  # a folded or odd header line: left to the full parser
        headers[name] = value.strip()
    return headers, content


def _multipart_fast(body: bytes, boundary: str) -> list[tuple[str, bytes]] | None:
    """The ``files`` parts of a well-formed multipart/form-data body (CRLF lines, as clients send), split on the
    boundary in linear time; None when the body is not that simple (then :func:`_multipart_by_email` reads it)."""
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pieces = (b"\r\n" + body).split(delimiter)
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):  # preamble, parts, close delimiter
        return None
    out = []
    for piece in pieces[1:-1]:
        parsed = _part(piece)
        if parsed is None:
            return None
        headers, content = parsed
        if headers.get_param("name", header="content-disposition") != "files":
            continue
        encoding = str(headers.get("content-transfer-encoding", "")).strip().lower()
        if encoding not in ("", "binary", "8bit", "7bit"):
            return None  # base64 or quoted-printable parts (deprecated in form data): the full parser decodes them
        out.append((headers.get_filename() or f"files[{len(out)}]", content))
    return out


def _from_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if isinstance(boundary, str) and 0 < len(boundary) <= 200:
        found = _multipart_fast(body, boundary)
        if found is not None:
            return found
    return _multipart_by_email(body, content_type)


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


def decode_all(body: bytes, content_type: str, size: int, limits: dict) -> list[tuple[str, np.ndarray]]:
    items = parse_images(body, content_type, limits["max_images"])
    return list(zip([name for name, _ in items], decode_images(items, size, limits)))
