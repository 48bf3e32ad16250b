"""The OHIF viewer (a built ``@ohif/app`` ``dist/``) served same-origin at ``/ohif/``.

OHIF's published build assumes it lives at ``/``; here it lives under ``/ohif/``, so its index
page, style sheets and webpack runtimes (``__webpack_require__.p = "/"``) are rewritten as they
are served, the page's inline scripts move to one file (the Content-Security-Policy forbids
inline code), and ``app-config.js`` is generated to point the data source at this server.
Fetch a build with ``scripts/fetch_ohif.sh`` and set ``CLOUDFILM_OHIF_DIR`` to its ``dist``.

The app's files are public: they are the published OHIF build and hold no study data; every study
OHIF shows comes over DICOMweb under the caller's own credentials, a signed-in session or, for a
clinician elsewhere, a clinician share's DICOMweb token, which OHIF takes as ``?token=`` and sends
as ``Authorization: Bearer`` on each request.
"""

from __future__ import annotations

import mimetypes
import re
import threading
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from pacs.errors import NotFound
from viewer_api.auth.access import PUBLIC
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

PREFIX = "/ohif"
router = APIRouter(include_in_schema=False, route_class=DeclaredRoute, dependencies=[Depends(PUBLIC)])
_RUNTIME_MARKER = b'__webpack_require__.p = "/"'
_INLINE_RE = re.compile(rb"<script>(.*?)</script>", re.S)
INLINE_SCRIPT = "cloudfilm-inline.js"
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
  // Opening an AI SEG or SR series draws it over its CT at once, without a "load?" prompt per series.
  disableConfirmationPrompts: true,
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


def _inline_scripts(html: bytes) -> tuple[bytes, bytes]:
    """Move the page's inline scripts into one external script (the CSP allows no inline code)."""
    bodies: list[bytes] = []

    def take(match: re.Match[bytes]) -> bytes:
        bodies.append(match.group(1))
        return f'<script src="/{INLINE_SCRIPT}"></script>'.encode() if len(bodies) == 1 else b""  # prefixed below

    page = _INLINE_RE.sub(take, html)
    code = b";\n".join(bodies).replace(b'window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{PREFIX}/"'.encode())
    return page, code + b";\n"


def _patched(path: Path) -> bytes | None:
    """The file rewritten for ``PREFIX``, or None when it needs no rewriting (cached per mtime)."""
    key = (str(path), path.stat().st_mtime)
    with _LOCK:
        if key in _PATCHED:
            return _PATCHED[key]
    data = path.read_bytes()
    out: bytes | None = None
    if path.name == "index.html":
        page, code = _inline_scripts(data)
        out = page.replace(b'src="/', f'src="{PREFIX}/'.encode()).replace(b'href="/', f'href="{PREFIX}/'.encode())
        with _LOCK:
            _PATCHED[(str(path) + "#inline", key[1])] = code
    elif path.suffix == ".css":
        out = data.replace(b"url(/", f"url({PREFIX}/".encode())
    elif path.suffix == ".js" and _RUNTIME_MARKER in data:
        out = data.replace(_RUNTIME_MARKER, f'__webpack_require__.p = "{PREFIX}/"'.encode())
    with _LOCK:
        _PATCHED[key] = out
    return out


def _serve(path: Path) -> Response:
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".wasm":
        media = "application/wasm"
    patched = _patched(path)
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


@router.get(f"{PREFIX}/{INLINE_SCRIPT}")
async def ohif_inline(request: Request) -> Response:
    index = _dist(request) / "index.html"
    _patched(index)
    code = _PATCHED.get((str(index) + "#inline", index.stat().st_mtime), b"")
    return Response(code, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


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
