"""Object store contract, run against both backends (filesystem and a real SeaweedFS S3)."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pacs.errors import InvalidDataset, NotFound, SettingsError, StorageUnavailable
from pacs.settings import Settings
from pacs.storage import open_store
from pacs.storage.base import ObjectInfo, ObjectStore
from pacs.storage.filesystem import FilesystemStore
from pacs.storage.s3 import PART_SIZE, S3Store, parse_endpoint
from tests.s3server import S3Server
from tests.upstream import source_sha256

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm"
MiB = 1024 * 1024


class _Unsized(io.RawIOBase):
    """A non-seekable stream of ``total`` deterministic bytes (size unknown to the store)."""

    def __init__(self, total: int, fail_after: int | None = None) -> None:
        self._left = total
        self._pos = 0
        self._fail_after = fail_after
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise ConnectionResetError("sender went away")
        n = min(len(buffer), self._left, 256 * 1024)
        chunk = _pattern(self._pos, n)
        buffer[:n] = chunk
        self.digest.update(chunk)
        self._left -= n
        self._pos += n
        return n


def _pattern(offset: int, n: int) -> bytes:
    """Bytes whose value depends on their position, so a misplaced range shows."""
    block = bytes(range(251)) * 2
    out = bytearray()
    while len(out) < n:
        start = (offset + len(out)) % 251
        out += block[start : start + min(251, n - len(out))]
    return bytes(out)


def _keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return sorted(info.key for info in store.list(prefix))


# Round trips --------------------------------------------------------------------------------


def test_staged_bytes_appear_only_when_published(object_store: ObjectStore) -> None:
    staged = object_store.stage_bytes(b"DICM-staged")
    assert list(object_store.list()) == []
    staged.publish(KEY).result()
    assert object_store.get_bytes(KEY) == b"DICM-staged"
    refused = object_store.stage_bytes(b"refused")
    refused.discard()
    assert [o.key for o in object_store.list()] == [KEY]


def test_staged_file_is_synced_temp_then_renamed(fs_store: FilesystemStore) -> None:
    staged = fs_store.stage_bytes(b"data")
    [tmp] = list((fs_store.root / ".tmp").iterdir())
    assert tmp.read_bytes() == b"data"
    with pytest.raises(InvalidDataset):
        staged.publish("../escape.dcm")  # a bad key is refused and the staged file is dropped
    assert list((fs_store.root / ".tmp").iterdir()) == []
    fs_store.stage_bytes(b"dropped").discard()
    assert list((fs_store.root / ".tmp").iterdir()) == []


def test_put_bytes_roundtrip(object_store: ObjectStore) -> None:
    object_store.put_bytes(KEY, b"DICM-data")
    assert object_store.get_bytes(KEY) == b"DICM-data"
    assert object_store.head(KEY) == ObjectInfo(KEY, 9)


def test_put_stream_known_and_unknown_size(object_store: ObjectStore) -> None:
    object_store.put_stream("a/known.dcm", io.BytesIO(b"x" * 1000), 1000)
    object_store.put_stream("a/unknown.dcm", io.BytesIO(b"y" * 1000))
    assert object_store.get_bytes("a/known.dcm") == b"x" * 1000
    assert object_store.get_bytes("a/unknown.dcm") == b"y" * 1000


def test_put_empty_object(object_store: ObjectStore) -> None:
    object_store.put_bytes("a/empty", b"")
    assert object_store.head("a/empty") == ObjectInfo("a/empty", 0)
    assert object_store.get_bytes("a/empty") == b""


def test_put_file_roundtrip(object_store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "in.dcm"
    src.write_bytes(_pattern(0, 300_000))
    object_store.put_file(KEY, src)
    assert object_store.get_bytes(KEY) == src.read_bytes()


def test_overwrite_replaces_whole_object(object_store: ObjectStore) -> None:
    object_store.put_bytes(KEY, b"first version, longer")
    object_store.put_bytes(KEY, b"second")
    assert object_store.get_bytes(KEY) == b"second"


def test_open_reads_in_pieces_and_closes(object_store: ObjectStore) -> None:
    data = _pattern(0, 3 * MiB + 17)
    object_store.put_bytes(KEY, data)
    with object_store.open(KEY) as fh:
        assert fh.read(10) == data[:10]
        assert fh.read(MiB) == data[10 : 10 + MiB]
        assert fh.read() == data[10 + MiB :]
        assert fh.read(1) == b""
    assert fh.closed


def test_many_partial_reads_do_not_leak_connections(object_store: ObjectStore) -> None:
    object_store.put_bytes(KEY, _pattern(0, 2 * MiB))
    for _ in range(50):  # more than the S3 pool size
        with object_store.open(KEY) as fh:
            assert fh.read(5) == _pattern(0, 5)
    assert object_store.get_range(KEY, 1, 4) == _pattern(1, 4)


@pytest.mark.slow
def test_large_object_streamed_without_size(object_store: ObjectStore) -> None:
    total = 40 * MiB + 123  # three parts on S3: 16 + 16 + 8 MiB
    stream = _Unsized(total)
    object_store.put_stream(KEY, io.BufferedReader(stream))
    assert object_store.head(KEY) == ObjectInfo(KEY, total)
    digest = hashlib.sha256()
    with object_store.open(KEY) as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == stream.digest.hexdigest()
    # A range that straddles the first part boundary.
    assert object_store.get_range(KEY, PART_SIZE - 100, 200) == _pattern(PART_SIZE - 100, 200)
    if isinstance(object_store, S3Store):
        stat = object_store._client.stat_object(object_store.bucket, KEY)
        assert stat.etag is not None and stat.etag.endswith("-3"), "expected a 3-part multipart upload"


# Ranged reads --------------------------------------------------------------------------------


def test_get_range(object_store: ObjectStore) -> None:
    data = _pattern(0, 10_000)
    object_store.put_bytes(KEY, data)
    assert object_store.get_range(KEY, 0, 1) == data[:1]
    assert object_store.get_range(KEY, 1234, 4321) == data[1234 : 1234 + 4321]
    assert object_store.get_range(KEY, 9990, 100) == data[9990:]  # truncated at the end
    assert object_store.get_range(KEY, 10_000, 10) == b""  # starts at the end
    assert object_store.get_range(KEY, 50_000, 10) == b""  # starts past the end
    assert object_store.get_range(KEY, 5, 0) == b""


def test_read_into(object_store: ObjectStore) -> None:
    """One ranged read into a caller's buffer; short only where the object ends."""
    data = _pattern(0, 100_000)
    object_store.put_bytes(KEY, data)
    buffer = bytearray(70_000)
    view = memoryview(buffer)
    assert object_store.read_into(KEY, 0, view[:40_000]) == 40_000 and buffer[:40_000] == data[:40_000]
    assert object_store.read_into(KEY, 40_000, view[40_000:]) == 30_000
    assert bytes(buffer) == data[:70_000]
    assert object_store.read_into(KEY, 90_000, view) == 10_000 and buffer[:10_000] == data[90_000:]
    assert object_store.read_into(KEY, 100_000, view) == 0  # starts at the end
    assert object_store.read_into(KEY, 5, view[:0]) == 0
    with pytest.raises(NotFound):
        object_store.read_into("1.2/1.2.3/missing.dcm", 0, view)


def test_concurrent_range_reads(object_store: ObjectStore) -> None:
    data = _pattern(0, 2 * MiB)
    object_store.put_bytes(KEY, data)
    offsets = [i * 32_768 for i in range(64)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        parts = list(pool.map(lambda off: object_store.get_range(KEY, off, 32_768), offsets))
    assert b"".join(parts) == data


# Missing keys, delete, list --------------------------------------------------------------------


def test_missing_key(object_store: ObjectStore) -> None:
    assert object_store.head(KEY) is None
    with pytest.raises(NotFound):
        object_store.open(KEY)
    with pytest.raises(NotFound):
        object_store.get_range(KEY, 0, 10)
    with pytest.raises(NotFound):
        object_store.get_range(KEY, 0, 0)
    with pytest.raises(NotFound):
        object_store.get_bytes(KEY)


def test_delete_is_idempotent(object_store: ObjectStore) -> None:
    object_store.put_bytes(KEY, b"data")
    object_store.delete(KEY)
    assert object_store.head(KEY) is None
    object_store.delete(KEY)
    object_store.delete("never/existed")
    assert _keys(object_store) == []


def test_delete_leaves_neighbours(object_store: ObjectStore) -> None:
    object_store.put_bytes("s/a/1.dcm", b"1")
    object_store.put_bytes("s/a/2.dcm", b"2")
    object_store.delete("s/a/1.dcm")
    assert _keys(object_store) == ["s/a/2.dcm"]


def test_list_with_prefix(object_store: ObjectStore) -> None:
    for key in ("1.2/1.3/a.dcm", "1.2/1.3/b.dcm", "1.2/1.4/c.dcm", "1.20/1.5/d.dcm", "9/9/e.dcm"):
        object_store.put_bytes(key, key.encode())
    assert _keys(object_store) == [
        "1.2/1.3/a.dcm",
        "1.2/1.3/b.dcm",
        "1.2/1.4/c.dcm",
        "1.20/1.5/d.dcm",
        "9/9/e.dcm",
    ]
    assert _keys(object_store, "1.2/") == ["1.2/1.3/a.dcm", "1.2/1.3/b.dcm", "1.2/1.4/c.dcm"]
    assert _keys(object_store, "1.2") == [
        "1.2/1.3/a.dcm",
        "1.2/1.3/b.dcm",
        "1.2/1.4/c.dcm",
        "1.20/1.5/d.dcm",
    ]
    assert _keys(object_store, "1.2/1.3/") == ["1.2/1.3/a.dcm", "1.2/1.3/b.dcm"]
    assert _keys(object_store, "nothing/") == []
    sizes = {info.key: info.size for info in object_store.list("9/")}
    assert sizes == {"9/9/e.dcm": len(b"9/9/e.dcm")}


# Key checks ----------------------------------------------------------------------------------

BAD_KEYS = [
    "../escape.dcm",
    "a/../../escape.dcm",
    "a/..",
    "..",
    "/etc/passwd",
    "/abs/key.dcm",
    "a//b.dcm",
    "a/b/",
    "%2e%2e/escape.dcm",
    "a/%2e%2e/%2e%2e/escape.dcm",
    "a\\..\\..\\escape.dcm",
    "a\\b.dcm",
    "a\x00b.dcm",
    "a/b.dcm\x00",
    "",
    ".",
    ".hidden",
    "a/ b.dcm",
    "x" * 600,
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda k: repr(k)[:32])
def test_bad_keys_are_rejected(object_store: ObjectStore, key: str, tmp_path: Path) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidDataset):
        object_store.put_bytes(key, b"evil")
    with pytest.raises(InvalidDataset):
        object_store.put_stream(key, io.BytesIO(b"evil"))
    for call in (
        lambda: object_store.open(key),
        lambda: object_store.get_range(key, 0, 1),
        lambda: object_store.head(key),
        lambda: object_store.delete(key),
    ):
        with pytest.raises(InvalidDataset):
            call()
    assert _keys(object_store) == []
    # Nothing appeared anywhere under tmp_path (for the filesystem store: beside or above its root).
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before
    if isinstance(object_store, FilesystemStore):
        assert sorted(p.name for p in object_store.root.parent.iterdir()) == ["objects"]
        assert not (object_store.root.parent / "escape.dcm").exists()


# Failures ------------------------------------------------------------------------------------


def test_failed_stream_leaves_no_object(object_store: ObjectStore) -> None:
    # Fails after 20 MiB: on S3 that is mid multipart upload, which must be aborted.
    stream = _Unsized(40 * MiB, fail_after=20 * MiB)
    with pytest.raises(StorageUnavailable):
        object_store.put_stream(KEY, io.BufferedReader(stream))
    assert object_store.head(KEY) is None
    assert _keys(object_store) == []


def test_short_stream_with_known_size(object_store: ObjectStore) -> None:
    """The filesystem keeps what it read; S3 refuses a body shorter than announced."""
    if isinstance(object_store, S3Store):
        with pytest.raises(StorageUnavailable):
            object_store.put_stream(KEY, io.BytesIO(b"abc"), 10)
        assert object_store.head(KEY) is None
    else:
        object_store.put_stream(KEY, io.BytesIO(b"abc"), 10)
        assert object_store.get_bytes(KEY) == b"abc"


def test_ping(object_store: ObjectStore) -> None:
    object_store.ping()


# Filesystem specifics ------------------------------------------------------------------------


def test_fs_no_temp_files_after_put(fs_store: FilesystemStore) -> None:
    fs_store.put_bytes(KEY, b"data")
    fs_store.put_stream("a/b.dcm", io.BufferedReader(_Unsized(3 * MiB)))
    assert list((fs_store.root / ".tmp").iterdir()) == []
    assert (fs_store.root / KEY).read_bytes() == b"data"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("boom")])
def test_fs_failure_during_write_leaves_nothing(
    fs_store: FilesystemStore, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def failing_fsync(fd: int) -> None:
        raise error

    monkeypatch.setattr(os, "fdatasync", failing_fsync)
    with pytest.raises((StorageUnavailable, RuntimeError)):
        fs_store.put_bytes(KEY, b"data")
    monkeypatch.undo()
    assert fs_store.head(KEY) is None
    assert list((fs_store.root / ".tmp").iterdir()) == []
    assert _keys(fs_store) == []


def test_fs_failing_stream_leaves_no_temp_file(fs_store: FilesystemStore) -> None:
    with pytest.raises(StorageUnavailable):
        fs_store.put_stream(KEY, io.BufferedReader(_Unsized(5 * MiB, fail_after=2 * MiB)))
    assert list((fs_store.root / ".tmp").iterdir()) == []
    assert fs_store.head(KEY) is None


# S3 specifics --------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _dead_store(endpoint: str) -> S3Store:
    return S3Store(endpoint, "deadbucket", "key", "secret-key", secure=False, region=None)


def test_s3_dead_endpoint_fails_fast() -> None:
    store = _dead_store(f"127.0.0.1:{_closed_port()}")  # constructing touches no network
    for call in (
        store.ping,
        lambda: store.put_bytes(KEY, b"data"),
        lambda: store.head(KEY),
        lambda: store.get_range(KEY, 0, 1),
        lambda: list(store.list()),
    ):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            call()
        assert time.monotonic() - started < 10
        assert "127.0.0.1" in str(info.value) and "\n" not in str(info.value)
    store.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in conns:
        conn.close()
    sock.close()


@pytest.mark.slow
def test_s3_silent_endpoint_fails_within_bound(silent_server: str) -> None:
    store = _dead_store(silent_server)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        store.ping()
    assert time.monotonic() - started < 15
    store.close()


@pytest.mark.s3
def test_s3_wrong_credentials(s3_server: S3Server) -> None:
    store = S3Store(s3_server.endpoint, "wrongcreds", s3_server.access_key, "not-the-secret", False, None)
    with pytest.raises(StorageUnavailable, match="refused"):
        store.ping()
    store.close()


@pytest.mark.s3
def test_s3_prefix_keys_are_relative(s3_store: S3Store, s3_server: S3Server) -> None:
    scoped = S3Store(
        "http://" + s3_server.endpoint,
        s3_store.bucket,
        s3_server.access_key,
        s3_server.secret_key,
        secure=True,  # the http:// scheme wins
        region=None,
        prefix="/tenant/a/",
    )
    scoped.put_bytes(KEY, b"scoped")
    s3_store.put_bytes("outside.dcm", b"not in the prefix")
    assert scoped.url == f"s3://{s3_store.bucket}/tenant/a"
    assert _keys(scoped) == [KEY]
    assert _keys(scoped, "1.2.3/") == [KEY]
    assert scoped.get_bytes(KEY) == b"scoped"
    assert sorted(_keys(s3_store)) == ["outside.dcm", f"tenant/a/{KEY}"]
    scoped.close()


@pytest.mark.s3
def test_s3_bucket_created_once_even_when_racing(s3_server: S3Server) -> None:
    bucket = f"race-{uuid.uuid4().hex[:20]}"
    stores = [
        S3Store(s3_server.endpoint, bucket, s3_server.access_key, s3_server.secret_key, False, None) for _ in range(6)
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda s: s.ping(), stores))
    stores[0].put_bytes("k", b"v")
    assert stores[1].get_bytes("k") == b"v"
    for store in stores:
        store.close()


@pytest.mark.s3
def test_s3_longer_stream_than_announced_is_refused(s3_store: S3Store) -> None:
    with pytest.raises(ValueError):
        s3_store.put_stream(KEY, io.BytesIO(b"abcdef"), 3)
    assert s3_store.head(KEY) is None


# Settings parsing ----------------------------------------------------------------------------


def test_parse_endpoint() -> None:
    assert parse_endpoint("minio:9000", False) == ("minio:9000", False)
    assert parse_endpoint("minio:9000", True) == ("minio:9000", True)
    assert parse_endpoint("http://minio:9000", True) == ("minio:9000", False)
    assert parse_endpoint("https://s3.example.org/", False) == ("s3.example.org", True)
    for bad in ("ftp://x:1", "http://x:1/path", "", "x:1/path", "http://user@x:1"):
        with pytest.raises(SettingsError):
            parse_endpoint(bad, False)


def test_from_settings() -> None:
    settings = Settings(
        storage_url="s3://archive/site-1",
        s3_endpoint="https://s3.example.org:9000",
        s3_access_key="ak",
        s3_secret_key=SecretStr("sk"),
        s3_region="eu-west-1",
    )
    store = open_store(settings)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint, store.secure) == (
        "archive",
        "site-1",
        "s3.example.org:9000",
        True,
    )
    assert store.url == "s3://archive/site-1"
    store.close()


@pytest.mark.parametrize(
    "url",
    ["s3://Bad_Bucket", "s3://ab", "s3://bucket/../x", "s3://bucket/a%2fb", "s3:///prefix-only"],
)
def test_from_settings_rejects_bad_urls(url: str) -> None:
    settings = Settings(storage_url=url, s3_endpoint="127.0.0.1:9000")
    with pytest.raises(SettingsError):
        S3Store.from_settings(settings)


def test_from_settings_needs_both_keys() -> None:
    settings = Settings(storage_url="s3://bucket", s3_endpoint="127.0.0.1:9000", s3_access_key="ak")
    with pytest.raises(SettingsError):
        S3Store.from_settings(settings)


# --- leftovers of killed writes (the staging a crash leaves behind) ------------------------------


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_fs_cleanup_temp_removes_only_stale_temp_files(fs_store: FilesystemStore) -> None:
    fs_store.put_bytes(KEY, b"acknowledged")
    tmp = fs_store.root / ".tmp"
    stale, live = tmp / "put-stale", tmp / "put-live"
    stale.write_bytes(b"half an object")
    live.write_bytes(b"being written")
    _age(stale, 7200)
    _age(fs_store.root / KEY, 7200)
    staged = fs_store.stage_bytes(b"staged by a live ingest")
    assert fs_store.cleanup_temp(3600, remove=False) == (str(stale),)
    assert stale.exists()
    assert fs_store.cleanup_temp(3600) == (str(stale),)
    assert not stale.exists() and live.exists()
    staged.publish("1.2/3.dcm").result()  # the live write completes undisturbed
    assert fs_store.get_bytes("1.2/3.dcm") == b"staged by a live ingest"
    assert fs_store.get_bytes(KEY) == b"acknowledged"
    assert fs_store.cleanup_temp(0) == (str(live),)
    assert list(tmp.iterdir()) == []


@pytest.mark.s3
def test_s3_cleanup_temp_aborts_incomplete_multipart_uploads_under_its_prefix(s3_store: S3Store,
                                                                              s3_server: S3Server) -> None:  # fmt: skip
    scoped = S3Store(s3_server.endpoint, s3_store.bucket, s3_server.access_key, s3_server.secret_key, False, None,
                     prefix="tenant")  # fmt: skip
    scoped.put_bytes(KEY, b"acknowledged")
    client = s3_store._client
    # Uploads begun by writers that then died (minio has no public call to begin one without finishing it).
    ours = client._create_multipart_upload(s3_store.bucket, f"tenant/{KEY}.x", {})
    client._upload_part(s3_store.bucket, f"tenant/{KEY}.x", b"p" * (5 * MiB), None, ours, 1)
    theirs = client._create_multipart_upload(s3_store.bucket, "other/1.dcm", {})
    assert scoped.cleanup_temp(3600) == ()  # begun a moment ago: could be a live upload
    time.sleep(1.1)  # S3 keeps the start time to the second
    expected = (f"{scoped.url}/{KEY}.x (upload {ours})",)
    assert scoped.cleanup_temp(0, remove=False) == expected
    assert scoped.cleanup_temp(0) == expected
    assert scoped.cleanup_temp(0) == ()
    left = client._list_multipart_uploads(s3_store.bucket).uploads
    assert [(u.object_name, u.upload_id) for u in left] == [("other/1.dcm", theirs)]
    assert scoped.get_bytes(KEY) == b"acknowledged" and _keys(scoped) == [KEY]
    scoped.close()


#: minio's request methods that ``S3Store.cleanup_temp`` calls (minio has no public call to list or
#: abort incomplete multipart uploads), with the SHA-256 of their source in the release pinned (7.2.20).
MINIO_CALLED = {
    "minio.api:Minio._list_multipart_uploads": "7f366994e2c86c8c9112942da4b06f705b99d22fa5f378181eeda36563f3e97f",
    "minio.api:Minio._abort_multipart_upload": "5e18ae12e4caaa5176fd6637c0fa5f3aeb80a6bfd1f3185b6010bba7da75b7c9",
}


@pytest.mark.parametrize("path", sorted(MINIO_CALLED))
def test_the_minio_internals_the_s3_store_calls_are_unchanged(path: str) -> None:
    digest = source_sha256(path)
    assert digest == MINIO_CALLED[path], (
        f"minio changed {path}, which S3Store.cleanup_temp calls: check its arguments and what it returns "
        f"(ListMultipartUploadsResult paging, NoSuchUpload), then record the new hash here ({digest}) and the "
        "version in pyproject.toml")
