"""Multipart parsing of the endpoint: the linear fast path gives what the standard library's MIME parser gives on
what clients send, and leaves everything else (bare LF lines, base64 parts, odd headers) to it."""
import base64

import pytest
import requests
from fastapi import HTTPException

from conceptlens.serve.parsing import _from_multipart, _multipart_by_email, _multipart_fast, parse_images


def prepared(files) -> tuple[str, bytes]:
    req = requests.Request("POST", "http://127.0.0.1/", files=files).prepare()
    return req.headers["Content-Type"], req.body


@pytest.mark.parametrize("files", [
    [("files", ("a.png", b"\x89PNG\r\n\r\n--x\r\n--" * 40, "image/png"))],
    [("files", ("a.png", b"abc")), ("files", ("b \u00e9.png", b"\r\n\r\ndata\r\n")), ("other", ("c", b"zz")),
     ("files", ("", b"q"))],
    [("image", ("a.png", b"abc"))],
    [("files", ("empty.png", b""))],
])
def test_the_fast_path_agrees_with_the_email_parser(files):
    content_type, body = prepared(files)
    boundary = content_type.split("boundary=")[1]
    fast = _multipart_fast(body, boundary)
    assert fast is not None and fast == _multipart_by_email(body, content_type) == _from_multipart(body, content_type)


def test_what_the_fast_path_does_not_take_goes_to_the_email_parser():
    head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
    encoded = head + b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"pixels") + b"\r\n--b--\r\n"
    assert _multipart_fast(encoded, "b") is None
    assert _from_multipart(encoded, "multipart/form-data; boundary=b") == [("a.png", b"pixels")]
    bare = encoded.replace(b"\r\n", b"\n")  # bare LF lines
    assert _multipart_fast(bare, "b") is None
    assert _from_multipart(bare, "multipart/form-data; boundary=b") == [("a.png", b"pixels")]
    unterminated = head + b"\r\nabc"  # no close delimiter
    assert _multipart_fast(unterminated, "b") is None


def test_a_body_that_is_no_multipart_is_a_4xx():
    with pytest.raises(HTTPException) as err:
        parse_images(b"just text", "multipart/form-data; boundary=zz", 8)
    assert 400 <= err.value.status_code < 500
    with pytest.raises(HTTPException) as err:
        parse_images(b"just text", "multipart/form-data", 8)
    assert 400 <= err.value.status_code < 500
