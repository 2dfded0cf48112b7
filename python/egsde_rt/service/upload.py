"""The body of ``POST /translate``: what it may be, and how it is read.

Two ways to send the image file, as clients send files:

* the file's bytes as the body, its ``Content-Type`` an image type or ``application/octet-stream``
  (``curl -H 'Content-Type: image/png' --data-binary @cat.png``, ``fetch(url, {body: file})``);
* a ``multipart/form-data`` form with exactly one field, a file (``curl -F image=@cat.png``,
  ``requests.post(url, files={"image": f})``, an HTML form, ``FormData``). Its name does not
  matter. A second part, a field that is no file (settings go in the query) or a form without a
  file is refused with a message naming the fix. python-multipart (Starlette's own parser)
  parses it as it streams in: nothing but the one file is kept.

Any other type is refused before the body is read (415; curl's default for ``--data-binary``,
``application/x-www-form-urlencoded``, gets the two commands that work). Either way the body is
read as it arrives, its running total against the upload limit (413 as soon as it crosses it,
a chunked body too) and the whole of it within its deadline (408): the form's own bytes count.
Which browsers may send it at all is ``http_app``'s cross-origin rule.
"""

from __future__ import annotations

import asyncio
import time

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from ..errors import ConfigError, ImageError
from .proxy import upload_too_large, upload_too_slow

FORM = "multipart/form-data"
# What /translate takes as its body's Content-Type (parameters such as "; charset" aside).
BODY_TYPES = f"image/*, application/octet-stream or {FORM} (one file field)"
# The two ways that work, as curl sends them.
HOW_TO_SEND = ("send the image file's bytes with its type (curl --fail -H 'Content-Type: image/png' --data-binary "
               "@cat.png URL) or as a form with one file field (curl --fail -F image=@cat.png URL)")
URLENCODED = "application/x-www-form-urlencoded"  # curl's default type for --data and --data-binary
MAX_BOUNDARY = 70  # RFC 2046: a multipart boundary is 1 to 70 characters


class UploadTooLarge(ImageError):
    """An upload over the service's size limit (413)."""


class UploadTimeout(ImageError):
    """An upload that did not arrive within the service's body deadline (408)."""


class UploadAborted(ImageError):
    """An upload whose client went away before it was complete (400; nobody reads it)."""


class UnsupportedMediaType(ImageError):
    """A body whose Content-Type is none of ``BODY_TYPES`` (415)."""


class FormError(ImageError):
    """A multipart form that is not one file field (400)."""


def check_upload_size(nbytes: int, max_upload_mb: float) -> None:
    if nbytes > max_upload_mb * 2**20:
        raise UploadTooLarge(upload_too_large(max_upload_mb, nbytes))


def declared_length(headers) -> int:
    """The body's declared ``Content-Length`` (0 when none is declared); a malformed one is a 400."""
    text = headers.get("content-length")
    if text is None:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"Content-Length must be a non-negative integer, got {text!r}")
    return value


def body_boundary(value: str | None) -> bytes | None:
    """How the body of this ``Content-Type`` is read: None for the file's own bytes (an image type
    or ``application/octet-stream``), the boundary of a ``multipart/form-data`` form; any other
    type is ``UnsupportedMediaType``, a form without a usable boundary a 400."""
    kind, options = parse_options_header(value or "")
    kind = kind.decode("latin-1")
    if kind.startswith("image/") or kind == "application/octet-stream":
        return None
    if kind == FORM:
        boundary = options.get(b"boundary", b"")
        if not 0 < len(boundary) <= MAX_BOUNDARY:
            raise FormError(f"the {FORM} Content-Type needs a boundary of 1 to {MAX_BOUNDARY} characters, got "
                            f"{value!r}: let the client write the form and its header (curl -F image=@cat.png, "
                            "requests' files=)")
        return boundary
    hint = " (what curl --data-binary sends unless told the type)" if kind == URLENCODED else ""
    raise UnsupportedMediaType(f"the body's Content-Type must be {BODY_TYPES}, got {value!r}{hint}: {HOW_TO_SEND}")


async def body_chunks(request, max_upload_mb: float, deadline: float):
    """The body's chunks as they stream in, with a running total against ``max_upload_mb`` (a
    chunked body is refused as soon as it crosses the limit, not after it is buffered) and the
    monotonic ``deadline`` for the whole of it."""
    total = 0
    stream = request.stream().__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(stream.__anext__(), remaining)
        except StopAsyncIteration:
            return
        except ClientDisconnect:  # nobody is left to answer: a quiet 400, not a logged fault
            raise UploadAborted(f"the client went away after {total} bytes of the upload") from None
        except asyncio.TimeoutError:
            raise UploadTimeout(upload_too_slow(total)) from None
        total += len(chunk)
        check_upload_size(total, max_upload_mb)
        yield chunk


async def read_body(request, max_upload_mb: float, deadline: float) -> bytes:
    """The whole body (``body_chunks``: counted, within the deadline)."""
    return b"".join([chunk async for chunk in body_chunks(request, max_upload_mb, deadline)])


async def read_image(request, boundary: bytes | None, max_upload_mb: float, deadline: float) -> bytes:
    """The image file's bytes of a ``/translate`` body: the body itself (``boundary`` None), or
    the one file of its form (``body_boundary`` gives ``boundary``), read as it streams in."""
    if boundary is None:
        return await read_body(request, max_upload_mb, deadline)
    form = OneFileForm(boundary)
    async for chunk in body_chunks(request, max_upload_mb, deadline):
        form.write(chunk)
    return form.file()


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


class OneFileForm:
    """A ``multipart/form-data`` body parsed as it arrives (python-multipart's streaming parser,
    fed chunk by chunk): it must hold exactly one part, a file (a ``filename`` in its
    ``Content-Disposition``). The first part that breaks the rule is refused at once, with the
    fix; only the file's bytes are kept."""

    def __init__(self, boundary: bytes):
        self.parts, self.ended, self.data = 0, False, bytearray()
        self.field_name, self.filename = None, None
        self._header, self._value, self._disposition = b"", b"", b""
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_end": self._end})

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError as err:
            raise FormError(f"the {FORM} body is malformed ({err}): let the client write the form (curl -F "
                            "image=@cat.png, requests' files=)") from None

    def file(self) -> bytes:
        """The file's bytes, once the whole body has been written."""
        if not self.ended:
            raise FormError(f"the {FORM} body ended before its closing boundary: send the whole form (curl -F "
                            "image=@cat.png)")
        if self.parts == 0:
            raise FormError("the form has no file field: send the image as the form's one file (curl -F "
                            "image=@cat.png)")
        return bytes(self.data)

    def _part_begin(self) -> None:
        self.parts += 1
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name, filename = _text(options.get(b"name")), _text(options.get(b"filename"))
        if filename is None:
            raise FormError(f"the form's field {name!r} is not a file: the form holds the image file alone, and the "
                            "seed and settings go in the query (/translate?seed=7&M=300, curl -F image=@cat.png)")
        if self.parts > 1:
            raise FormError(f"the form has more than one file ({self.field_name!r} and {name!r}): send one image per "
                            "request, as the form's one file field")
        self.field_name, self.filename = name, filename

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self.data += data[start:end]

    def _end(self) -> None:
        self.ended = True
