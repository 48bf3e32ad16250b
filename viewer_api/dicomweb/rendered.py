"""Rendered images: DICOM pixels to JPEG/PNG/GIF for display (PS3.18 8.3.5, PS3.3 C.11).

The grayscale pipeline is Modality LUT (rescale or LUT sequence), VOI (the requested window,
else the header's window or VOI LUT, else the frame's own range), then MONOCHROME1/INVERSE
inversion. Colour images are shown as RGB (YBR is converted by the decoder), palette colour
through its LUTs. ``viewport`` crops and scales; thumbnails are small JPEGs.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.retrieve import StoredInstance, find_instances
from viewer_api.access import current_scope
from viewer_api.auth.access import STUDY_READERS
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.media import (
    RENDERED_TYPES,
    BadRequest,
    MediaRange,
    NotAcceptable,
    accept_of,
    type_matches,
)
from viewer_api.dicomweb.params import frame_numbers, uid
from viewer_api.dicomweb.pixels import frame_array, frame_count, load_image, locate

THUMBNAIL_SIZE = 128
MAX_VIEWPORT = 8192
MAX_GIF_FRAMES = 100
_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "linear_exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


@dataclass(frozen=True, slots=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"  # LINEAR | LINEAR_EXACT | SIGMOID (PS3.3 C.11.2.1.3)


@dataclass(frozen=True, slots=True)
class Viewport:
    """Scale into ``width`` x ``height``; optionally first crop the source region (sx, sy, sw, sh)."""

    width: int
    height: int
    sx: int = 0
    sy: int = 0
    sw: int | None = None  # negative: flip horizontally (PS3.18 8.3.5.1.3)
    sh: int | None = None


@dataclass(frozen=True, slots=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90
    region: tuple[float, float, float, float] | None = None  # WADO-URI: normalised x1, y1, x2, y2


def choose_media_type(accept: Sequence[MediaRange]) -> str:
    """The first of JPEG, PNG, GIF the client accepts, in its order of preference; else 406."""
    for rng in accept:
        if rng.is_multipart:
            continue
        for candidate in RENDERED_TYPES:
            if type_matches(rng.media_type, candidate):
                return candidate
    raise NotAcceptable("rendered images are available as image/jpeg, image/png or image/gif")


def parse_window(text: str | None) -> Window | None:
    """``center,width[,function]`` (PS3.18 8.3.5.1.4); a 400 when malformed."""
    if not text:
        return None
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) not in (2, 3):
        raise BadRequest("window must be center,width[,linear|linear-exact|sigmoid]")
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except ValueError:
        raise BadRequest("window center and width must be numbers") from None
    if not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        raise BadRequest("window width must be a positive number")
    function = _FUNCTIONS.get(pieces[2].lower()) if len(pieces) == 3 else "LINEAR"
    if function is None:
        raise BadRequest("window function must be linear, linear-exact or sigmoid")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> Viewport | None:
    """``vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3); a 400 when malformed."""
    if not text:
        return None
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) not in (2, 6):
        raise BadRequest("viewport must be vw,vh or vw,vh,sx,sy,sw,sh")
    try:
        values = [int(p) if p else None for p in pieces]
    except ValueError:
        raise BadRequest("viewport values must be integers") from None
    vw, vh = values[0], values[1]
    if vw is None or vh is None or not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
        raise BadRequest(f"viewport width and height must be between 1 and {MAX_VIEWPORT}")
    if len(values) == 2:
        return Viewport(vw, vh)
    sx, sy, sw, sh = values[2:]
    if (sx or 0) < 0 or (sy or 0) < 0 or sw == 0 or sh == 0:
        raise BadRequest("viewport source region must start at or after 0 and have a non-zero size")
    return Viewport(vw, vh, sx or 0, sy or 0, sw, sh)


def parse_quality(text: str | None) -> int:
    if text is None or text == "":
        return 90
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise BadRequest("quality must be an integer from 1 to 100")
    return int(text)


# --- pixels to display values -----------------------------------------------------------------


def to_display(frame: np.ndarray, header: Dataset, window: Window | None) -> np.ndarray:
    """A decoded frame as 8-bit grey (rows, cols) or RGB (rows, cols, 3)."""
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        return _palette(frame, header)
    if frame.ndim == 3:
        return _to_uint8(frame, int(header.get("BitsStored", 8) or 8))
    grey = _voi(_modality(frame, header), header, window)
    invert = photometric == "MONOCHROME1" or str(header.get("PresentationLUTShape", "")).strip() == "INVERSE"
    out = np.rint(grey * 255.0).astype(np.uint8)
    return 255 - out if invert else out


def _modality(frame: np.ndarray, header: Dataset) -> np.ndarray:
    if "ModalityLUTSequence" in header:
        return np.asarray(apply_modality_lut(frame, header), dtype=np.float32)
    slope = float(header.get("RescaleSlope", 1) or 1)
    intercept = float(header.get("RescaleIntercept", 0) or 0)
    out = frame.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def _first(value: Any) -> float:
    """The first of a multi-valued DS (WindowCenter may hold several windows)."""
    if not isinstance(value, str | int | float):
        value = value[0]
    return float(value)


def header_window(header: Dataset) -> Window | None:
    """The first window the header carries (C.11.2), if any."""
    try:
        if "WindowCenter" in header and "WindowWidth" in header:
            center, width = _first(header.WindowCenter), _first(header.WindowWidth)
            if width > 0:
                function = str(header.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
                return Window(center, width, function if function in _FUNCTIONS.values() else "LINEAR")
    except (TypeError, ValueError, IndexError):
        return None
    return None


def _voi(values: np.ndarray, header: Dataset, window: Window | None) -> np.ndarray:
    """Values in [0, 1] after the VOI transformation."""
    window = window or header_window(header)
    if window is None and "VOILUTSequence" in header:
        return _voi_lut(values, header.VOILUTSequence[0])
    if window is None:
        lo, hi = float(values.min()), float(values.max())
        window = Window((lo + hi) / 2.0, max(hi - lo, 1.0), "LINEAR_EXACT")
    c, w = np.float32(window.center), np.float32(window.width)
    if window.function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))).astype(np.float32)
    if window.function == "LINEAR_EXACT":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0)
    if w <= 1:
        return (values > c - 0.5).astype(np.float32)
    return np.clip((values - (c - np.float32(0.5))) / (w - 1) + 0.5, 0.0, 1.0)


def _voi_lut(values: np.ndarray, item: Dataset) -> np.ndarray:
    """A VOI LUT (PS3.3 C.11.2.1.1) as values in [0, 1]; indices below/above the table clamp to its ends."""
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    data = item.LUTData
    lut = np.frombuffer(data, dtype="<u2") if isinstance(data, bytes) else np.asarray(data, dtype=np.float64)
    lut = lut[: entries or 65536].astype(np.float32)
    index = np.clip(np.rint(values) - first, 0, len(lut) - 1).astype(np.int64)
    return np.clip(lut[index] / float((1 << (bits or 16)) - 1), 0.0, 1.0)


def _to_uint8(arr: np.ndarray, bits_stored: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    shift = max(bits_stored - 8, 0)
    return np.clip(arr.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def _palette(frame: np.ndarray, header: Dataset) -> np.ndarray:
    rgb = apply_color_lut(frame, header)
    bits = int(header.RedPaletteColorLookupTableDescriptor[2]) if "RedPaletteColorLookupTableDescriptor" in header \
        else 16
    return _to_uint8(np.asarray(rgb), bits)


# --- geometry and encoding ----------------------------------------------------------------------


def _crop_and_scale(img: PILImage.Image, opts: RenderOptions, thumbnail: bool) -> PILImage.Image:
    if opts.region is not None:
        x1, y1, x2, y2 = opts.region
        w, h = img.size
        img = img.crop((round(x1 * w), round(y1 * h), max(round(x2 * w), round(x1 * w) + 1),
                        max(round(y2 * h), round(y1 * h) + 1)))  # fmt: skip
    vp = opts.viewport
    if vp is None and thumbnail:
        vp = Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    if vp is None:
        return img
    if vp.sw is not None or vp.sh is not None or vp.sx or vp.sy:
        w, h = img.size
        sw = vp.sw if vp.sw is not None else w - vp.sx
        sh = vp.sh if vp.sh is not None else h - vp.sy
        box = (vp.sx, vp.sy, min(vp.sx + abs(sw), w), min(vp.sy + abs(sh), h))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise BadRequest("the viewport source region lies outside the image")
        img = img.crop(box)
        if sw < 0:
            img = img.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
        if sh < 0:
            img = img.transpose(PILImage.Transpose.FLIP_TOP_BOTTOM)
    w, h = img.size
    scale = min(vp.width / w, vp.height / h)
    if thumbnail:
        scale = min(scale, 1.0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != img.size:
        img = img.resize(size, PILImage.Resampling.BILINEAR if scale < 1 else PILImage.Resampling.BICUBIC)
    return img


def encode(frames: Sequence[np.ndarray], opts: RenderOptions, *, thumbnail: bool = False,
           frame_time_ms: float = 100.0) -> bytes:  # fmt: skip
    """Display frames (from :func:`to_display`) as one image; GIF animates several."""
    images = [_crop_and_scale(PILImage.fromarray(f), opts, thumbnail) for f in frames[:MAX_GIF_FRAMES]]
    buf = io.BytesIO()
    first = images[0]
    if opts.media_type == "image/png":
        first.save(buf, "PNG", compress_level=3)
    elif opts.media_type == "image/gif":
        pal = [im.convert("P", palette=PILImage.Palette.ADAPTIVE) if im.mode == "RGB" else im for im in images]
        pal[0].save(buf, "GIF", save_all=len(pal) > 1, append_images=pal[1:], duration=max(int(frame_time_ms), 20),
                    loop=0)
    else:
        first.save(buf, "JPEG", quality=75 if thumbnail and opts.quality == 90 else opts.quality)
    return buf.getvalue()


# --- routes -----------------------------------------------------------------------------------

router = APIRouter(tags=["DICOMweb"], route_class=DeclaredRoute,
                   dependencies=[Depends(STUDY_READERS)])
_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


def render(archive: Archive, scope: AccessScope, stored: StoredInstance, frames: Sequence[int] | None,
           opts: RenderOptions, *, thumbnail: bool = False) -> bytes:  # fmt: skip
    """Render frames of one instance (all of a multi-frame for GIF, else the first, when None)."""
    image = load_image(archive, scope, stored)
    if not image.has_pixels:
        raise NotFound("the instance has no image to render")
    if frames is None:
        count = image.frame_count if opts.media_type == "image/gif" and not thumbnail else 1
        frames = list(range(1, min(count, MAX_GIF_FRAMES) + 1))
        if thumbnail and image.frame_count > 1:
            frames = [(image.frame_count + 1) // 2]
    if opts.media_type != "image/gif" and len(frames) > 1:
        raise NotAcceptable("several frames render only as image/gif")
    shown = [to_display(frame_array(archive, image, n), image.header, opts.window) for n in frames]
    frame_time = float(image.header.get("FrameTime", 100) or 100)
    return encode(shown, opts, thumbnail=thumbnail, frame_time_ms=frame_time)


def representative(archive: Archive, scope: AccessScope, study: str, series: str | None) -> StoredInstance:
    """The image that stands for a study or series: the middle image of its first series with images."""
    found = find_instances(archive.engine, scope, study_uid=study, series_uid=series)
    images = [i for i in found if frame_count(i) > 0]
    if not images:
        raise NotFound("the " + ("series" if series else "study") + " holds no image to render")
    first_series = images[0].series_uid
    in_series = [i for i in images if i.series_uid == first_series]
    return in_series[len(in_series) // 2]


def _options(request: Request, thumbnail: bool) -> RenderOptions:
    q = request.query_params
    media_type = choose_media_type(accept_of(request))
    if thumbnail and media_type == "image/gif":
        media_type = "image/jpeg" if any(type_matches(r.media_type, "image/jpeg") for r in accept_of(request)) \
            else media_type
    return RenderOptions(media_type, parse_window(q.get("window")), parse_viewport(q.get("viewport")),
                         parse_quality(q.get("quality")))  # fmt: skip


async def _respond(request: Request, scope: AccessScope, study: str, series: str | None, instance: str | None,
                   frames: str | None, *, thumbnail: bool) -> Response:  # fmt: skip
    archive = archive_of(request)
    study = uid(study, "StudyInstanceUID")
    series = uid(series, "SeriesInstanceUID") if series is not None else None
    instance = uid(instance, "SOPInstanceUID") if instance is not None else None
    numbers = frame_numbers(frames, MAX_GIF_FRAMES) if frames is not None else None
    opts = _options(request, thumbnail)

    def work() -> tuple[bytes, str]:
        if instance is not None and series is not None:
            stored = locate(archive, scope, study, series, instance)
        else:
            stored = representative(archive, scope, study, series)
        return render(archive, scope, stored, numbers, opts, thumbnail=thumbnail), stored.sha256

    body, sha = await asyncio.to_thread(work)
    variant = hashlib.blake2b(f"{request.url.query}|{opts.media_type}".encode(), digest_size=6).hexdigest()
    etag = f'"{sha[:24]}-{variant}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=300", "Vary": "Accept",
               "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=opts.media_type, headers=headers)


@router.get("/studies/{study}/rendered", summary="Rendered image of a study (its representative image)")
async def study_rendered(study: str, request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _respond(request, scope, study, None, None, None, thumbnail=False)


@router.get("/studies/{study}/thumbnail", summary="Thumbnail of a study")
async def study_thumbnail(study: str, request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _respond(request, scope, study, None, None, None, thumbnail=True)


@router.get("/studies/{study}/series/{series}/rendered", summary="Rendered image of a series (its middle image)")
async def series_rendered(study: str, series: str, request: Request,
                          scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _respond(request, scope, study, series, None, None, thumbnail=False)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="Thumbnail of a series")
async def series_thumbnail(study: str, series: str, request: Request,
                           scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _respond(request, scope, study, series, None, None, thumbnail=True)


@router.get(_INSTANCE + "/rendered", summary="Rendered instance (GIF animates a multi-frame)")
async def instance_rendered(study: str, series: str, instance: str, request: Request,
                            scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _respond(request, scope, study, series, instance, None, thumbnail=False)


@router.get(_INSTANCE + "/thumbnail", summary="Thumbnail of an instance")
async def instance_thumbnail(study: str, series: str, instance: str, request: Request,
                             scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _respond(request, scope, study, series, instance, None, thumbnail=True)


@router.get(_INSTANCE + "/frames/{frames}/rendered", summary="Rendered frames (several only as image/gif)")
async def frames_rendered(study: str, series: str, instance: str, frames: str, request: Request,
                          scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _respond(request, scope, study, series, instance, frames, thumbnail=False)


@router.get(_INSTANCE + "/frames/{frames}/thumbnail", summary="Thumbnail of a frame")
async def frames_thumbnail(study: str, series: str, instance: str, frames: str, request: Request,
                           scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _respond(request, scope, study, series, instance, frames, thumbnail=True)
