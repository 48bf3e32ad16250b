"""The OHIF viewer (a built ``@ohif/app`` ``dist/``) served same-origin at ``/ohif/``.

OHIF's published build assumes it lives at ``/``; here it lives under ``/ohif/``, so its
index page and the webpack runtimes (``__webpack_require__.p = "/"``) are rewritten as they are
served, and ``app-config.js`` is generated to point the DICOMweb data source at this server.
Fetch a build with ``scripts/fetch_ohif.sh`` and set ``CLOUDFILM_OHIF_DIR`` to its ``dist``.
"""

from __future__ import annotations

import mimetypes
import threading
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from pacs.errors import NotFound
from viewer_api.context import archive_of

PREFIX = "/ohif"
router = APIRouter(include_in_schema=False)
_RUNTIME_MARKER = b'__webpack_require__.p = "/"'
_PATCHED: dict[tuple[str, float], bytes | None] = {}
_LOCK = threading.Lock()

APP_CONFIG = """window.config = {
  routerBasename: '%(prefix)s',
  showStudyList: true,
  extensions: [],
  modes: [],
  customizationService: {},
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'cloudfilm',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'cloudfilm',
      configuration: {
        friendlyName: 'cloudfilm',
        name: 'cloudfilm',
        wadoUriRoot: window.location.origin + '/wado',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""


def _dist(request: Request) -> Path:
    root = archive_of(request).settings.ohif_dir
    if root is None or not (root / "index.html").is_file():
        raise NotFound("the OHIF viewer is not installed here (set CLOUDFILM_OHIF_DIR to a built OHIF dist)")
    return root.resolve()


def _patched(path: Path, prefix: str) -> bytes | None:
    """The file rewritten for ``prefix``, or None when it needs no rewriting (cached per mtime)."""
    key = (str(path), path.stat().st_mtime)
    with _LOCK:
        if key in _PATCHED:
            return _PATCHED[key]
    data = path.read_bytes()
    out: bytes | None = None
    if path.name == "index.html":
        out = (data.replace(b'window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{prefix}/"'.encode())
               .replace(b'src="/', f'src="{prefix}/'.encode())
               .replace(b'href="/', f'href="{prefix}/'.encode()))  # fmt: skip
    elif path.suffix == ".js" and _RUNTIME_MARKER in data:
        out = data.replace(_RUNTIME_MARKER, f'__webpack_require__.p = "{prefix}/"'.encode())
    with _LOCK:
        _PATCHED[key] = out
    return out


def _serve(path: Path) -> Response:
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".wasm":
        media = "application/wasm"
    patched = _patched(path, PREFIX)
    cache = "no-cache" if path.name == "index.html" else "public, max-age=3600"
    if patched is not None:
        return Response(patched, media_type=media, headers={"Cache-Control": cache})
    return FileResponse(path, media_type=media, headers={"Cache-Control": cache})


@router.get(PREFIX)
async def ohif_root() -> Response:
    return RedirectResponse(PREFIX + "/", status_code=308)


@router.get(PREFIX + "/app-config.js")
async def ohif_config(request: Request) -> Response:
    _dist(request)
    body = APP_CONFIG % {"prefix": PREFIX}
    return Response(body, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@router.get(PREFIX + "/{path:path}")
async def ohif_file(path: str, request: Request) -> Response:
    root = _dist(request)
    target = (root / path).resolve() if path else root / "index.html"
    if not target.is_relative_to(root):
        raise NotFound("no such file")
    if target.is_file():
        return _serve(target)
    if "." in Path(path).name:  # a missing asset, not a viewer route
        raise NotFound("no such file")
    return _serve(root / "index.html")  # client-side routes (/ohif/viewer?...) all load the app
