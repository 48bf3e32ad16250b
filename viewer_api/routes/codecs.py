"""The built-in viewer's image decoders (WebAssembly builds from npm), served same-origin at ``/codecs/``.

``scripts/fetch_codecs.sh`` downloads the pinned packages into a directory of flat files (the
Emscripten glue ``*.js``, its ``*.wasm``, ``lossless.js``, their licences and ``VERSIONS``);
``CLOUDFILM_CODECS_DIR`` names it. The decode worker (``static/decode-worker.js``) loads them from
here, so the browser fetches nothing from outside the archive. Without the directory the viewer
decodes uncompressed and RLE frames only and shows the server's rendered JPEG for the rest.

The files are open like /static/ (credentials are not even read): published decoder builds, no study data.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from pacs.errors import NotFound
from pacs.settings import Settings
from viewer_api.auth.access import OPEN
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

PREFIX = "/codecs"
router = APIRouter(include_in_schema=False, route_class=DeclaredRoute, dependencies=[Depends(OPEN)])
_MEDIA = {".js": "text/javascript", ".wasm": "application/wasm", ".txt": "text/plain; charset=utf-8"}


def codecs_installed(settings: Settings) -> bool:
    """Whether ``/codecs/`` serves a fetched decoder set (its ``VERSIONS`` file is written last)."""
    return settings.codecs_dir is not None and (settings.codecs_dir / "VERSIONS").is_file()


@router.get(PREFIX + "/{path:path}")
async def codec_file(path: str, request: Request) -> Response:
    settings = archive_of(request).settings
    if not codecs_installed(settings) or settings.codecs_dir is None:
        raise NotFound("the viewer's decoders are not installed here (run scripts/fetch_codecs.sh)")
    root = settings.codecs_dir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file() or target.suffix not in _MEDIA:
        raise NotFound("no such file")
    headers = {"Cache-Control": "public, max-age=3600", "Cross-Origin-Resource-Policy": "same-origin"}
    return FileResponse(target, media_type=_MEDIA[target.suffix], headers=headers)
