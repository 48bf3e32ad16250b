"""Property-based fuzzing of the header parser, the DICOM JSON converter and the whole ingest path.

Valid objects (the factory's edge cases and pydicom test files, every encoding) are mutated the
way damaged real-world data is: bit flips, truncation, elements inserted, duplicated or removed,
length fields changed. Whatever comes out, nothing crashes, nothing takes a second, and each
object ends stored (byte for byte, indexed) or refused with a reason, leaving no index row
without its object and no object without its index row.
"""

from __future__ import annotations

import io
import json
import struct
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.filereader import data_element_generator
from pydicom.uid import UID
from sqlalchemy import func, select

from pacs.archive import Archive
from pacs.dicomfile import dataset_offset, parse_part10
from pacs.dicomjson import dump, header_model
from pacs.errors import NotDicom
from pacs.index.models import Instance
from pacs.ingest import Outcome
from pacs.settings import Settings
from pacs.storage.filesystem import FilesystemStore
from tests.factories import edge_case_corpus

#: A few hundred examples in the suite. Each must take under a second of CPU: measured as the
#: calling thread's CPU time (parsing, conversion and the index work run there), which other
#: processes on a busy machine do not inflate as they do wall time.
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

_SEED_CASES = ("rtstruct-ending-in-sequences-explicit-le", "rtstruct-ending-in-sequences-explicit-be",
               "private-implicit-le", "un-vr-explicit-le", "everything-explicit-le", "after-pixel-data-explicit-be",
               "multiframe-rle-two-fragments-per-frame", "deflated", "ct-JPEGLSLossless")
_PYDICOM_SEEDS = ("reportsi.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "SC_rgb_rle_2frame.dcm")


@dataclass(frozen=True)
class Seed:
    """A valid object, with where each top-level element of its data set starts."""

    name: str
    data: bytes
    starts: tuple[int, ...]  # element starts, then the end of the data set
    offset: int  # where the data set starts: mutations go there, mostly
    little: bool
    implicit: bool


def _seed(name: str, data: bytes) -> Seed:
    offset = dataset_offset(data)
    ts = _transfer_syntax(data)
    little, implicit = ts.is_little_endian, ts.is_implicit_VR
    starts: list[int] = []
    if not ts.is_deflated:
        fp = io.BytesIO(data)
        fp.seek(offset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for elem in data_element_generator(fp, implicit, little):
                tell = getattr(elem, "value_tell", None) or getattr(elem, "file_tell", None)
                if tell is None:
                    continue
                header = 8 if implicit or str(elem.VR) not in {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC",
                                                                   "UN", "UR", "UT", "UV"} else 12
                starts.append(tell - header)
    return Seed(name, data, (*sorted(starts), len(data)), offset, little, implicit)


def _transfer_syntax(data: bytes) -> UID:
    from pydicom import dcmread

    return UID(dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _seeds() -> list[Seed]:
    corpus = dict(edge_case_corpus())
    found = [_seed(name, corpus[name]) for name in _SEED_CASES]
    found += [_seed(name, Path(get_testdata_file(name)).read_bytes()) for name in _PYDICOM_SEEDS]
    return found


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed damaged by one to four mutations."""
    seed = draw(st.sampled_from(SEEDS))
    data = bytearray(seed.data)
    order = "<" if seed.little else ">"
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "duplicate", "remove", "length", "bytes"]))
        starts = [s for s in seed.starts if s < len(data)] or [len(data)]
        low = min(seed.offset, len(data)) if draw(st.integers(0, 9)) else 0  # the meta now and then
        if kind == "flip" and len(data) > low:
            at = draw(st.integers(low, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(low, len(data))):]
        elif kind == "insert":
            at = draw(st.sampled_from(starts))
            tag = draw(st.integers(0, 0xFFFFFFFF))
            value = draw(st.binary(max_size=24))
            vr = draw(st.sampled_from([b"LO", b"CS", b"SQ", b"UN", b"OB", b"US", b"PN", b"XX"]))
            length = draw(st.one_of(st.just(len(value)), st.integers(0, 0xFFFFFFFF)))
            element = (struct.pack(order + "HHI", tag >> 16, tag & 0xFFFF, length) if seed.implicit
                       else struct.pack(order + "HH2s2xI", tag >> 16, tag & 0xFFFF, vr, length))
            data[at:at] = element + value
        elif kind in ("duplicate", "remove") and len(starts) > 1:
            i = draw(st.integers(0, len(starts) - 2))
            a, b = starts[i], min(starts[i + 1], len(data))
            if kind == "duplicate":
                data[b:b] = data[a:b]
            else:
                del data[a:b]
        elif kind == "length" and len(starts) > 1:
            at = draw(st.sampled_from(starts[:-1]))
            field = at + (4 if seed.implicit else 6)
            size = 4 if seed.implicit else draw(st.sampled_from([2, 4]))
            field += 2 if size == 4 and not seed.implicit else 0
            new = draw(st.sampled_from([0, 1, 2, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF]) | st.integers(0, 1 << 16))
            if field + size <= len(data):
                fmt = order + ("I" if size == 4 else "H")
                data[field:field + size] = struct.pack(fmt, new & ((1 << (8 * size)) - 1))
        elif kind == "bytes":
            at = draw(st.integers(low, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@FUZZ
@given(mutated())
def test_the_header_parser_parses_or_refuses(data: bytes) -> None:
    started = time.thread_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = parse_part10(io.BytesIO(data), len(data))
        except NotDicom as exc:
            assert str(exc)
            return
        finally:
            assert time.thread_time() - started < 1.0
    for frame in parsed.frames:
        assert frame.offset >= 0 and frame.offset + frame.length <= len(data)


@FUZZ
@given(mutated())
def test_the_json_converter_equals_pydicom_on_whatever_parses(data: bytes) -> None:
    """Damaged values take the fast path or pydicom's, and come out as pydicom converts them
    element by element (an element pydicom cannot convert is left out by both)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = parse_part10(io.BytesIO(data), len(data))
        except NotDicom:
            return
        started = time.thread_time()
        text = dump(header_model(parsed.dataset, "p", parsed.pixel_vr, parsed.pixel_tag))
        assert time.thread_time() - started < 1.0
        ds = parse_part10(io.BytesIO(data), len(data)).dataset
        expected = {}
        for tag in ds.keys():  # noqa: SIM118
            try:
                expected[f"{tag:08X}"] = ds[tag].to_json_dict(lambda e: f"p/bulk/{e.tag:08X}", 1024)
            except Exception:  # noqa: S112 - left out, as ingest leaves it out
                continue
    if parsed.pixel_vr is not None:
        key = f"{parsed.pixel_tag:08X}"
        expected[key] = {"vr": parsed.pixel_vr, "BulkDataURI": f"p/bulk/{key}"}
    text.encode("utf-8")  # what the index stores: nothing a database cannot hold
    assert json.loads(text) == json.loads(json.dumps(expected))


@pytest.fixture(scope="module")
def fuzz_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    with Archive.open(Settings(data_dir=tmp_path_factory.mktemp("fuzz"), http_port=0, dicom_port=0)) as opened:
        yield opened


def _objects(archive: Archive) -> tuple[set[str], list[str]]:
    store = archive.store
    assert isinstance(store, FilesystemStore)
    return {o.key for o in store.list()}, [p.name for p in store.root.joinpath(".tmp").iterdir()]


@FUZZ
@given(mutated())
def test_ingest_stores_or_refuses_and_leaves_nothing_partial(fuzz_archive: Archive, data: bytes) -> None:
    archive = fuzz_archive
    started = time.thread_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = archive.ingest.store_bytes(data, "fuzz")
    assert time.thread_time() - started < 1.0
    assert isinstance(result.outcome, Outcome)
    if not result.ok or result.warning:
        assert result.reason
    with archive.engine.connect() as conn:
        keys = set(conn.execute(select(Instance.object_key)).scalars())
        assert conn.execute(select(func.count()).select_from(Instance)).scalar_one() == len(keys)
    objects, staged = _objects(archive)
    assert objects == keys and staged == []  # every row has its object, every object its row
    if result.outcome is Outcome.STORED:
        with archive.engine.connect() as conn:
            key = conn.execute(select(Instance.object_key).where(
                Instance.sop_uid == result.sop_instance_uid)).scalar_one()
        assert archive.store.get_bytes(key) == data
