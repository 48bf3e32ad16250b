"""Request parameters shared by the DICOMweb routes: UIDs in paths, frame lists, the base URL."""

from __future__ import annotations

import re

from fastapi import Request

from pacs.uids import is_valid_uid
from viewer_api.context import archive_of
from viewer_api.dicomweb.media import BadRequest

#: Frames one WADO-RS frames request may list (each at most once, so a response never holds more
#: than the instance's own pixel data).
MAX_FRAMES_PER_REQUEST = 10_000
_PRINTABLE = re.compile(r"^[0-9A-Za-z.,_/ -]{0,80}$")


def uid(value: str, what: str) -> str:
    """``value`` as a UID or a 400 naming ``what`` (a ``../`` can never reach the index or store)."""
    if not is_valid_uid(value):
        if _PRINTABLE.match(value):
            raise BadRequest(f"{what} {value[:64]!r} is not a valid UID")
        raise BadRequest(f"{what} is not a valid UID")  # never echo markup or control characters
    return value


def frame_numbers(text: str, limit: int = MAX_FRAMES_PER_REQUEST) -> list[int]:
    """``1,3,5`` as a list of 1-based frame numbers (PS3.18 8.4.2: a comma-separated list), each
    listed once and at most ``limit`` of them: a short URL never makes a response larger than the
    instance (``1,1,1,...`` would repeat a frame without bound)."""
    pieces = text.split(",")
    if len(pieces) > limit:
        raise BadRequest(f"a request may list at most {limit} frames")
    numbers: list[int] = []
    seen: set[int] = set()
    for piece in pieces:
        piece = piece.strip()
        if not piece.isdigit() or len(piece) > 9 or int(piece) < 1:
            raise BadRequest(f"frame list {text[:70]!r} must be comma-separated numbers from 1")
        number = int(piece)
        if number in seen:
            raise BadRequest(f"frame {number} is listed more than once")
        seen.add(number)
        numbers.append(number)
    return numbers


def dicomweb_base(request: Request) -> str:
    """The absolute URL of the DICOMweb root, ending with ``/`` (``CLOUDFILM_PUBLIC_URL`` wins); a
    partition's (``…/dicomweb/p/{partition}/``) for a request under one."""
    slug = request.path_params.get("partition")
    return _dicomweb_root(request) + (f"p/{slug}/" if slug else "")


def _dicomweb_root(request: Request) -> str:
    public = archive_of(request).settings.public_url
    if public:
        return f"{public.rstrip('/')}/dicomweb/"
    root = str(request.base_url).rstrip("/")
    host = request.headers.get("host", "")
    server = request.scope.get("server")
    direct = not any(h in request.headers for h in ("x-forwarded-host", "x-forwarded-proto", "forwarded"))
    if direct and host and ":" not in host.rsplit("]", 1)[-1] and server and server[1] not in (80, 443):
        # A Host header without the port of a direct connection (dicomweb-client sends one):
        # the URLs we hand out must still reach this listener.
        root = f"{request.url.scheme}://{host}:{server[1]}"
    return f"{root}/dicomweb/"


def flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("false", "0", "no", ""):
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    raise BadRequest(f"{name} must be true or false")


def int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high], or a 400 naming it."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return number
