"""multipart/related (RFC 2387) for DICOMweb: a streaming parser with bounded memory and a writer.

The parser is fed the request body chunk by chunk; each part's body goes to memory up to a small
threshold and then to a spool file, so a 2 GB STOW-RS request never sits in RAM. Limits on the
preamble, part headers and part count turn hostile input into :class:`MalformedMultipart`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pacs.ingest import Part10Source
from viewer_api.dicomweb.media import MediaRange, parse_media_type

_PREAMBLE = b"\x00" * 128 + b"DICM"


class MalformedMultipart(ValueError):
    """The body is not a well-formed multipart message within the limits."""


@dataclass(frozen=True, slots=True)
class MultipartLimits:
    max_parts: int = 10_000
    max_header_bytes: int = 16 * 1024
    max_preamble_bytes: int = 64 * 1024
    memory_threshold: int = 1024 * 1024  # a part larger than this is spooled to disk


@dataclass(slots=True)
class Part:
    """One received part: its headers and its body, in memory or in a spool file."""

    index: int
    headers: dict[str, str]
    content_type: MediaRange
    size: int = 0
    data: bytearray | None = field(default_factory=bytearray)
    path: Path | None = None
    _fh: BinaryIO | None = None

    def write(self, chunk: bytes | bytearray | memoryview, threshold: int, spool_dir: Path | None) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self._fh is not None:
            self._fh.write(chunk)
            return
        assert self.data is not None
        self.data += chunk
        if len(self.data) > threshold:
            fd, name = tempfile.mkstemp(prefix="stow-", suffix=".part", dir=spool_dir)
            self.path = Path(name)
            self._fh = os.fdopen(fd, "wb")
            self._fh.write(self.data)
            self.data = None

    def seal(self) -> None:
        """The body is complete: close the spool file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def source(self) -> Part10Source:
        """The body as a Part 10 source; a body that opens with the file meta group but lacks the
        preamble and ``DICM`` (what ``pydicom.dcmwrite`` gives for an in-memory dataset, and so what
        dicomweb-client sends) gets them, so the archive keeps a well-formed Part 10 file (PS3.10 7.1)."""
        label = f"part {self.index}"
        head = self.head(132)
        prefix = _PREAMBLE if head[128:132] != b"DICM" and head[:2] == b"\x02\x00" else b""
        if self.path is not None:
            path = self.path
            if prefix:
                return Part10Source.from_prefixed_file(prefix, path, label)
            return Part10Source(lambda: open(path, "rb"), self.size, label)
        return Part10Source.from_bytes(prefix + bytes(self.data or b""), label)

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes of the body."""
        if self.path is None:
            return bytes((self.data or b"")[:n])
        with open(self.path, "rb") as fh:
            return fh.read(n)

    def discard(self) -> None:
        self.seal()
        self.data = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None


def boundary_of(content_type: MediaRange) -> bytes:
    boundary = content_type.params.get("boundary", "")
    if not 0 < len(boundary) <= 70 or not boundary.isascii() or not boundary.isprintable():
        raise MalformedMultipart("the multipart boundary is missing or invalid")
    return boundary.encode("ascii")


class MultipartParser:
    """Incremental parser: :meth:`feed` returns the parts completed by a chunk; :meth:`close` checks the end."""

    _PREAMBLE, _HEADERS, _BODY, _AFTER_DELIMITER, _EPILOGUE = range(5)

    def __init__(self, boundary: bytes, default_type: str, limits: MultipartLimits,
                 spool_dir: Path | None = None) -> None:  # fmt: skip
        self._delimiter = b"\r\n--" + boundary
        self._default_type = default_type
        self._limits = limits
        self._spool_dir = spool_dir
        self._buf = bytearray(b"\r\n")  # so a body that opens with the delimiter is found like any other
        self._state = self._PREAMBLE
        self._part: Part | None = None
        self._count = 0
        self._done = False

    @property
    def part_count(self) -> int:
        return self._count

    def feed(self, chunk: bytes) -> list[Part]:
        """The parts ``chunk`` completes; on MalformedMultipart, those are discarded first (the caller
        never receives them) and so is the part in progress."""
        if self._state == self._EPILOGUE:
            return []
        self._buf += chunk
        done: list[Part] = []
        progressing = True
        try:
            while progressing:
                progressing = self._step(done)
        except BaseException:
            for part in done:
                part.discard()
            self.abort()
            raise
        return done

    def close(self) -> list[Part]:
        """End of body: fail unless the close delimiter was seen."""
        if self._state != self._EPILOGUE:
            self.abort()
            raise MalformedMultipart("the multipart body ends before its closing boundary")
        return []

    def abort(self) -> None:
        if self._part is not None:
            self._part.discard()
            self._part = None

    # --- states -------------------------------------------------------------------------------

    def _step(self, done: list[Part]) -> bool:
        if self._state == self._PREAMBLE:
            return self._preamble()
        if self._state == self._AFTER_DELIMITER:
            return self._after_delimiter()
        if self._state == self._HEADERS:
            return self._headers()
        if self._state == self._BODY:
            return self._body(done)
        self._buf.clear()
        return False

    def _preamble(self) -> bool:
        at = self._buf.find(self._delimiter)
        if at < 0:
            if len(self._buf) > self._limits.max_preamble_bytes + len(self._delimiter):
                raise MalformedMultipart("no multipart boundary found at the start of the body")
            return False
        del self._buf[: at + len(self._delimiter)]
        self._state = self._AFTER_DELIMITER
        return True

    def _after_delimiter(self) -> bool:
        if len(self._buf) < 2:
            return False
        if self._buf[:2] == b"--":
            self._state = self._EPILOGUE
            self._buf.clear()
            return False
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > 256:
                raise MalformedMultipart("a multipart boundary line is malformed")
            return False
        if self._buf[:end].strip(b" \t"):
            raise MalformedMultipart("a multipart boundary line is malformed")
        del self._buf[: end + 2]
        self._state = self._HEADERS
        return True

    def _headers(self) -> bool:
        if self._buf[:2] == b"\r\n":
            raw = b""
            del self._buf[:2]
        else:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self._limits.max_header_bytes:
                    raise MalformedMultipart("the headers of a part are too long")
                return False
            if end > self._limits.max_header_bytes:
                raise MalformedMultipart("the headers of a part are too long")
            raw = bytes(self._buf[:end])
            del self._buf[: end + 4]
        self._count += 1
        if self._count > self._limits.max_parts:
            raise MalformedMultipart(f"too many parts (at most {self._limits.max_parts})")
        headers = _parse_headers(raw)
        ctype = parse_media_type(headers.get("content-type", self._default_type))
        self._part = Part(self._count, headers, ctype)
        self._state = self._BODY
        return True

    def _body(self, done: list[Part]) -> bool:
        part = self._part
        assert part is not None
        at = self._buf.find(self._delimiter)
        if at < 0:
            keep = len(self._delimiter) - 1
            if len(self._buf) > keep:
                cut = len(self._buf) - keep
                part.write(memoryview(self._buf)[:cut], self._limits.memory_threshold, self._spool_dir)
                del self._buf[:cut]
            return False
        part.write(memoryview(self._buf)[:at], self._limits.memory_threshold, self._spool_dir)
        del self._buf[: at + len(self._delimiter)]
        part.seal()
        done.append(part)
        self._part = None
        self._state = self._AFTER_DELIMITER
        return True


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise MalformedMultipart("the headers of a part cannot be read") from exc
    for line in text.split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise MalformedMultipart("a part header line is malformed")
        headers[name.strip().lower()] = value.strip()
    return headers


class MultipartWriter:
    """Frames parts of a multipart/related response body."""

    def __init__(self) -> None:
        self.boundary = uuid.uuid4().hex

    def content_type(self, part_type: str, **params: str) -> str:
        extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items())
        return f'multipart/related; type="{part_type}"; boundary={self.boundary}{extra}'

    def part_head(self, content_type: str, location: str | None = None, length: int | None = None) -> bytes:
        lines = [f"--{self.boundary}", f"Content-Type: {content_type}"]
        if location:
            lines.append(f"Content-Location: {location}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @staticmethod
    def part_tail() -> bytes:
        return b"\r\n"

    def close(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("ascii")

    def body(self, parts: list[tuple[str, bytes]]) -> bytes:
        """A whole small body at once: ``(content_type, data)`` per part."""
        out = bytearray()
        for ctype, data in parts:
            out += self.part_head(ctype, length=len(data))
            out += data
            out += self.part_tail()
        out += self.close()
        return bytes(out)
