"""What ``POST /translate`` takes as its body and from whom, without Ray (cheap): the body types
(``service.upload``: an image's bytes, or a multipart form with exactly one file field, read as
it streams in, counted and within its deadline), the cross-origin rule (``http_app.refused_origin``:
a browser's request for a page of another origin is refused, curl's and the page's are not), and
the messages that name the fix. The running service is tried in test_serve_contract.py."""

import asyncio
import json
import pickle
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")

from egsde_rt.bench.serve_hostile import claimed_size_png, png  # noqa: E402
from egsde_rt.errors import ImageError, ImageTooLargeError  # noqa: E402
from egsde_rt.service.http_app import (SERVE_PIXELS_HINT, create_app, decode_upload, parse_query,  # noqa: E402
                                       refused_origin, request_error_status)
from egsde_rt.service.upload import (FormError, UnsupportedMediaType, UploadTimeout, UploadTooLarge,  # noqa: E402
                                     body_boundary, read_image)

BOUNDARY = b"egsde-test-boundary"


def form(*parts: tuple, close: bool = True) -> bytes:
    """A multipart/form-data body of ``parts``: (name, filename or None, content)."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        kind = b"Content-Type: image/png\r\n" if filename is not None else b""
        body += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n" + kind + b"\r\n"
        body += content + b"\r\n"
    return body + (b"--" + BOUNDARY + b"--\r\n" if close else b"")


class Streamed:
    """A request whose body streams in ``size``-byte chunks (``pause`` seconds before each); it
    counts the chunks read."""

    def __init__(self, body: bytes, size: int = 7, pause: float = 0.0):
        self.chunks = [body[i:i + size] for i in range(0, len(body), size)]
        self.pause, self.read = pause, 0

    async def _stream(self):
        for chunk in self.chunks:
            if self.pause:
                await asyncio.sleep(self.pause)
            self.read += 1
            yield chunk

    def stream(self):
        return self._stream()


def _read(body: bytes, boundary=BOUNDARY, max_upload_mb=1.0, seconds=5.0, **stream) -> bytes:
    request = Streamed(body, **stream)
    return asyncio.run(read_image(request, boundary, max_upload_mb, time.monotonic() + seconds))


# --- the body's type --------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg; q=1", "application/octet-stream", "IMAGE/PNG"])
def test_an_image_type_is_the_files_own_bytes(content_type):
    assert body_boundary(content_type) is None


def test_a_form_type_gives_its_boundary_or_a_400_naming_the_fix():
    assert body_boundary(f'multipart/form-data; boundary="{BOUNDARY.decode()}"') == BOUNDARY
    for bad in ("multipart/form-data", "multipart/form-data; boundary=", f"multipart/form-data; boundary={'b' * 71}"):
        with pytest.raises(FormError, match="needs a boundary of 1 to 70 characters") as refused:
            body_boundary(bad)
        assert "curl -F image=@cat.png" in str(refused.value) and request_error_status(refused.value) == 400


def test_curls_default_type_is_refused_with_the_two_commands_that_work():
    """``curl --data-binary @cat.png URL`` sends application/x-www-form-urlencoded: 415, and the
    message gives the type to add and the form upload."""
    with pytest.raises(UnsupportedMediaType) as refused:
        body_boundary("application/x-www-form-urlencoded")
    message = str(refused.value)
    assert request_error_status(refused.value) == 415
    assert "got 'application/x-www-form-urlencoded' (what curl --data-binary sends unless told the type)" in message
    assert "curl --fail -H 'Content-Type: image/png' --data-binary @cat.png URL" in message
    assert "curl --fail -F image=@cat.png URL" in message
    for other in ("text/plain", "", None, "multipart/mixed; boundary=x"):
        with pytest.raises(UnsupportedMediaType, match="Content-Type must be image/\\*, application/octet-stream or "
                                                       "multipart/form-data \\(one file field\\)"):
            body_boundary(other)


# --- the form, as it streams in -----------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 7, 4096])
def test_a_form_with_one_file_gives_the_files_bytes_whatever_the_chunks(size):
    image = png()
    assert _read(form(("image", "cat.png", image)), size=size) == image
    assert _read(form(("file", "", image))) == image  # any field name; an empty file name is still a file


def test_the_raw_body_is_read_whole():
    assert _read(png(), boundary=None) == png()


@pytest.mark.parametrize("parts,close,match", [
    ((("image", "cat.png", b"a"), ("other", "dog.png", b"b")), True,
     "the form has more than one file ('image' and 'other'): send one image per request"),
    ((("image", "cat.png", b"a"), ("seed", None, b"7")), True,
     "the form's field 'seed' is not a file: the form holds the image file alone, and the seed and settings go in "
     "the query (/translate?seed=7&M=300"),
    ((("M", None, b"3"),), True, "the form's field 'M' is not a file"),
    ((), True, "the form has no file field: send the image as the form's one file (curl -F image=@cat.png)"),
    ((("image", "cat.png", b"a"),), False, "ended before its closing boundary"),
])
def test_a_form_that_is_not_one_file_is_a_400_naming_the_problem_and_the_fix(parts, close, match):
    with pytest.raises(FormError) as refused:
        _read(form(*parts, close=close))
    assert match in str(refused.value) and request_error_status(refused.value) == 400


def test_a_malformed_form_is_a_400_not_a_fault():
    for body in (b"no boundary anywhere", b"--" + BOUNDARY + b"\r\nno-colon-header\r\n\r\nx"):
        with pytest.raises(FormError, match="multipart/form-data body"):
            _read(body)


def test_a_second_part_is_refused_before_the_rest_of_the_body_is_read():
    body = form(("image", "cat.png", b"a"), ("seed", None, b"7"), ("flood", "f.bin", b"\0" * 100_000))
    request = Streamed(body, size=64)
    with pytest.raises(FormError, match="'seed' is not a file"):
        asyncio.run(read_image(request, BOUNDARY, 1.0, time.monotonic() + 5))
    assert request.read < 10, f"{request.read} chunks were read"


def test_a_form_is_counted_against_the_upload_limit_as_it_streams_in():
    body = form(("image", "big.png", b"\0" * (3 * 2**20)))
    request = Streamed(body, size=2**16)
    with pytest.raises(UploadTooLarge, match="over the service's 1 MB limit") as refused:
        asyncio.run(read_image(request, BOUNDARY, 1.0, time.monotonic() + 5))
    assert request.read <= 17 and request_error_status(refused.value) == 413  # stopped at about 1 MB


def test_a_slow_form_gets_its_deadline():
    with pytest.raises(UploadTimeout, match="did not arrive in time") as refused:
        _read(form(("image", "cat.png", png())), size=8, pause=0.05, seconds=0.3)
    assert request_error_status(refused.value) == 408


# --- the cross-origin rule ------------------------------------------------------------------------------

HOST = [(b"host", b"127.0.0.1:8000")]


@pytest.mark.parametrize("method,headers,refused", [
    ("POST", [], False),  # curl, Python requests: no Origin, no Sec-Fetch-Site
    ("POST", [(b"sec-fetch-site", b"same-origin"), (b"origin", b"http://127.0.0.1:8000")], False),  # the page
    ("POST", [(b"sec-fetch-site", b"none")], False),  # the user, not a page
    ("POST", [(b"sec-fetch-site", b"cross-site"), (b"origin", b"https://attacker.example")], True),
    ("POST", [(b"sec-fetch-site", b"same-site"), (b"origin", b"http://127.0.0.1:3000")], True),  # another port
    ("POST", [(b"Sec-Fetch-Site", b"Cross-Site"), (b"origin", b"http://127.0.0.1:8000")], True),  # the browser's word
    ("POST", [(b"origin", b"http://127.0.0.1:8000")], False),  # an older browser, same origin
    ("POST", [(b"origin", b"https://attacker.example")], True),
    ("POST", [(b"origin", b"http://127.0.0.1:8001")], True),
    ("POST", [(b"origin", b"null")], True),  # a sandboxed frame, a file: page
    ("POST", [(b"origin", b"https://front.example"), (b"x-forwarded-host", b"front.example")], False),  # nginx
    ("GET", [(b"sec-fetch-site", b"cross-site")], False),  # a safe method changes nothing
])
def test_a_browser_request_for_a_page_of_another_origin_is_refused(method, headers, refused):
    refusal = refused_origin(method, HOST + headers)
    assert (refusal is not None) == refused, refusal
    if refused:
        assert refusal.startswith("a page of another origin cannot make a browser run a translation here (")
        assert "this service's own page (/)" in refusal and "curl, Python requests" in refusal


def _asgi(app, method: str, headers) -> tuple[int, dict, bool]:
    """(status, JSON body, whether the body was read) of ``method /`` sent to an ASGI app."""
    messages, read = [], []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "", "headers": HOST + headers,
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": form(("image", "cat.png", b"x")), "more_body": False}

    async def send(message):
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")), \
        bool(read)


def test_the_app_answers_a_cross_origin_post_with_403_before_reading_it():
    app = create_app()
    form_post = [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)]
    status, body, read = _asgi(app, "POST", form_post + [(b"sec-fetch-site", b"cross-site")])
    assert status == 403 and "another origin" in body["error"] and not read
    status, body, _ = _asgi(app, "POST", form_post + [(b"sec-fetch-site", b"same-origin")])
    assert status == 405  # let through: no POST route at / in this bare app


# --- messages that name the service's own knobs ---------------------------------------------------------

def test_the_pixel_limit_over_http_names_the_serve_option():
    with pytest.raises(ImageError) as refused:
        decode_upload(claimed_size_png(5000, 5000), 32)  # 25 Mpx, over the 32-px engine's 1 Mpx
    message = str(refused.value)
    assert "over the limit of" in message and message.endswith(SERVE_PIXELS_HINT)
    assert "egsde-rt serve --max-pixels" in message and "raise max_pixels" not in message
    again = pickle.loads(pickle.dumps(refused.value))  # as a replica's error reaches the proxy
    assert type(again) is ImageTooLargeError and str(again) == message and again.size == (5000, 5000)
    with pytest.raises(ImageError, match="not an image file") as other:
        decode_upload(b"not an image", 32)
    assert "--max-pixels" not in str(other.value)


def test_the_query_lists_seed_among_the_names_it_takes():
    for query, match in (({"sead": "1"}, "unknown setting 'sead' (did you mean 'seed'?); overridable here: "
                                         "['seed', 'fit', 'M', "),
                         ({"step": "2"}, "unknown setting 'step' (did you mean 'steps'?)"),
                         ({"s1": "cosine"}, "setting 's1' is fixed in this engine (baked into its graphs); "
                                            "overridable here: ['seed', 'fit', 'M', ")):
        with pytest.raises(Exception) as refused:
            parse_query(query)
        assert match in str(refused.value), refused.value
    assert parse_query({"seed": "7", "M": "3"}) == (7, {"M": 3})


def test_fit_pad_answers_with_the_images_aspect_ratio(tiny_torch_engine):
    """``?fit=pad``: the upload is padded to the square (its box returned with it), and the answer is
    the translation cut to that box: 48 x 32 comes back 32 x 21, the same pixels as
    ``Translator.run(..., fit="pad")``; the query takes ``fit`` beside the settings and refuses a bad one."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    from egsde_rt.errors import ConfigError
    from egsde_rt.runtime.translator import Translator
    from egsde_rt.service.deployment import translate_before

    rng = np.random.default_rng(2)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    x0, box = decode_upload(buffer.getvalue(), 32, fit="pad")
    assert x0.shape == (3, 32, 32) and (box[2] - box[0], box[3] - box[1]) == (32, 21)
    translator = Translator(tiny_torch_engine[0])
    (answer,) = translate_before(translator, torch.stack([x0]), [3], {"M": 2}, lambda: True, 5.0, [box])
    expected = translator.run(buffer.getvalue(), seed=3, fit="pad", M=2)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(answer))), np.asarray(expected))
    assert parse_query({"fit": "pad", "M": "2"}) == (0, {"M": 2})
    with pytest.raises(ConfigError, match="fit must be one of 'crop', 'pad'"):
        parse_query({"fit": "squash"})
