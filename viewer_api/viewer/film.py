"""Film sheets: a printable grid of images with the patient and study header and the window used.

The images are the ones chosen in the viewer, or evenly sampled from a series; each is rendered
through the same display pipeline as the DICOMweb rendered resource (modality LUT, window, photometric
inversion). The sheet is black like film, and comes as PNG or as a one-page PDF (Pillow writes it).
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont, ImageOps

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import InvalidQuery, NotFound
from viewer_api.dicomweb.pixels import frame_array, load_image, locate
from viewer_api.dicomweb.rendered import Window, header_window, to_display
from viewer_api.viewer.model import SeriesView, StudyView, display_name

MAX_IMAGES = 48
TILE = 384
MARGIN = 24
GAP = 8
HEADER = 172
PDF_DPI = 150
_FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts"))
_FONT_FILES = ("dejavu/DejaVuSans.ttf", "liberation/LiberationSans-Regular.ttf", "noto/NotoSans-Regular.ttf")
_WIDE_FONT_FILES = ("droid/DroidSansFallbackFull.ttf", "noto/NotoSansCJK-Regular.ttc")


@dataclass(frozen=True, slots=True)
class FilmRequest:
    series_uid: str | None = None
    images: tuple[tuple[str, int], ...] = ()  # (SOPInstanceUID, frame); empty: sample evenly
    count: int = 12
    columns: int = 3
    window: Window | None = None
    kind: Literal["png", "pdf"] = "png"


@cache
def _font(size: int, wide: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    names = (*_WIDE_FONT_FILES, *_FONT_FILES) if wide else _FONT_FILES
    for base in _FONT_DIRS:
        for name in names:
            path = base / name
            if path.exists():
                return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _text_font(text: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return _font(size, any(ord(ch) > 0x2FF for ch in text))


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _choose_series(view: StudyView, series_uid: str | None) -> SeriesView:
    candidates = [s for s in view.series if s.images]
    if not candidates:
        raise NotFound("the study holds no image to print")
    if series_uid is None:
        return candidates[0]
    for s in candidates:
        if s.uid == series_uid:
            return s
    raise NotFound("no such series with images in this study")


def _slices(series: SeriesView) -> list[tuple[str, int]]:
    return [(img.sop, n) for img in series.images for n in range(1, img.frames + 1)]


def choose_images(view: StudyView, req: FilmRequest) -> tuple[SeriesView, list[tuple[str, int]], int]:
    """The series, the images to print, and how many the series holds."""
    series = _choose_series(view, req.series_uid)
    slices = _slices(series)
    if req.images:
        known = set(slices)
        chosen = [i for i in req.images if i in known]
        if len(chosen) != len(req.images):
            raise NotFound("an image asked for is not in the series")
        return series, chosen[:MAX_IMAGES], len(slices)
    count = max(1, min(req.count, MAX_IMAGES, len(slices)))
    if count == len(slices):
        return series, slices, len(slices)
    step = (len(slices) - 1) / max(count - 1, 1)
    picks = sorted({round(i * step) for i in range(count)})
    return series, [slices[i] for i in picks], len(slices)


def make_film(archive: Archive, scope: AccessScope, view: StudyView, req: FilmRequest) -> bytes:
    """The film sheet as PNG or PDF bytes."""
    if not 1 <= req.columns <= 8:
        raise InvalidQuery("columns must be from 1 to 8")
    series, chosen, total = choose_images(view, req)
    cols = min(req.columns, len(chosen))
    rows = (len(chosen) + cols - 1) // cols
    width = 2 * MARGIN + cols * TILE + (cols - 1) * GAP
    height = HEADER + MARGIN + rows * TILE + (rows - 1) * GAP + 40
    sheet = PILImage.new("RGB", (width, height), "black")
    draw = ImageDraw.Draw(sheet)
    positions = {sop: i for i, (sop, _f) in enumerate(_slices(series))}
    window_used: Window | None = req.window
    for index, (sop, frame) in enumerate(chosen):
        stored = locate(archive, scope, view.header.study_uid, series.uid, sop)
        image = load_image(archive, scope, stored)
        if window_used is None:
            window_used = header_window(image.header)
        pixels = to_display(frame_array(archive, image, frame), image.header, req.window)
        tile = ImageOps.contain(PILImage.fromarray(pixels).convert("RGB"), (TILE, TILE),
                                PILImage.Resampling.LANCZOS)
        r, c = divmod(index, cols)
        x0 = MARGIN + c * (TILE + GAP)
        y0 = HEADER + r * (TILE + GAP)
        sheet.paste(tile, (x0 + (TILE - tile.width) // 2, y0 + (TILE - tile.height) // 2))
        label = f"{positions.get(sop, 0) + frame}/{total}"
        draw.text((x0 + 6, y0 + 4), label, fill="#ffd34d", font=_font(16, False))
    _header(draw, view, series, window_used, len(chosen), total, width)
    stamp = f"cloudfilm · {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    draw.text((MARGIN, height - 30), stamp, fill="#888888", font=_font(14, False))
    buf = io.BytesIO()
    if req.kind == "pdf":
        sheet.save(buf, "PDF", resolution=PDF_DPI, title=f"Film {view.header.study_uid}")
    else:
        sheet.save(buf, "PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _header(draw: ImageDraw.ImageDraw, view: StudyView, series: SeriesView, window: Window | None,
            shown: int, total: int, width: int) -> None:
    h = view.header
    name = display_name(h.patient_name) or "(no name)"
    patient = f"ID {h.patient_id}" + (f" ({h.issuer})" if h.issuer else "")
    if h.birth_date:
        patient += f" · born {_date(h.birth_date)}"
    if h.sex:
        patient += f" · {h.sex}"
    study = " · ".join(p for p in (_date(h.study_date), h.description, f"Acc {h.accession}" if h.accession else "")
                       if p)
    series_line = f"Series {series.number if series.number is not None else '-'} {series.description}".strip()
    series_line += f" · {series.modality} · {shown} of {total} images"
    if window is not None:
        series_line += f" · window C {window.center:g} W {window.width:g}"
    lines = [(name, 34, "#ffffff"), (patient, 20, "#dddddd"), (study, 20, "#dddddd"), (series_line, 18, "#bbbbbb")]
    y = MARGIN - 6
    for text, size, colour in lines:
        draw.text((MARGIN, y), text, fill=colour, font=_text_font(text, size))
        y += size + 10
    draw.line((MARGIN, HEADER - 14, width - MARGIN, HEADER - 14), fill="#444444", width=1)
