"""S3 object store (AWS S3, MinIO, SeaweedFS, ...) through the ``minio`` SDK.

S3 acknowledges a PUT (or a CompleteMultipartUpload) only once the object is stored, so a
``put_*`` that returns is durable. Streams of unknown size go up as multipart uploads of
:data:`PART_SIZE` parts; a failed multipart upload is aborted, so no partial object is ever
visible. Timeouts and retries are short so that a dead endpoint fails in seconds, not minutes.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name
from pydantic import SecretStr
from urllib3.exceptions import HTTPError
from urllib3.util import Retry, Timeout

from pacs.errors import InvalidDataset, NotFound, SettingsError, StorageUnavailable
from pacs.settings import Settings
from pacs.storage.base import ObjectInfo, ObjectStore
from pacs.storage.keys import check_key

log = logging.getLogger(__name__)

PART_SIZE = 16 * 1024 * 1024
"""Multipart part size: objects of unknown size up to 160 GB (10,000 parts) fit."""

POOL_SIZE = 32
"""Connections kept per host, enough for concurrent ranged frame reads."""

# Worst cases: an unreachable endpoint fails after 3 connect attempts (~6.6 s with backoff); one
# that accepts connections but never answers fails after one read timeout (no read retries).
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
_READ_BUFFER = 1024 * 1024

# Codes that mean "this key is not there" (HEAD answers carry no body; minio names them itself).
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})

_NETWORK_ERRORS: tuple[type[BaseException], ...] = (MinioException, HTTPError, OSError)


def _http_client() -> urllib3.PoolManager:
    """A connection pool with short connect timeouts and few retries (a dead endpoint fails fast)."""
    return urllib3.PoolManager(
        num_pools=4,
        maxsize=POOL_SIZE,
        timeout=Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(
            total=2,
            connect=2,
            read=0,
            status=2,
            other=0,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
        ),
    )


def parse_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """``host:port`` or ``http(s)://host:port`` → (``host:port``, secure); a scheme wins over ``secure``."""
    raw = endpoint.strip()
    if "://" in raw:
        parsed = urlparse(raw)
        if parsed.scheme not in ("http", "https"):
            raise SettingsError(f"invalid setting CLOUDFILM_S3_ENDPOINT: unsupported scheme {parsed.scheme!r}")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.username:
            raise SettingsError("invalid setting CLOUDFILM_S3_ENDPOINT: give only scheme, host and port")
        raw, secure = parsed.netloc, parsed.scheme == "https"
    if not raw or "/" in raw or "@" in raw or any(c.isspace() for c in raw):
        raise SettingsError(f"invalid setting CLOUDFILM_S3_ENDPOINT: {endpoint!r} is not host:port")
    return raw, secure


class _ResponseReader(io.RawIOBase):
    """Raw stream over a urllib3 response; closing it returns the connection to the pool."""

    def __init__(self, response: Any, key: str) -> None:
        super().__init__()
        self._response = response
        self._key = key
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._eof:
            return 0
        try:
            n = int(self._response.readinto(buffer))
        except _NETWORK_ERRORS as exc:
            log.warning("reading object %s from S3 failed: %r", self._key, exc)
            raise StorageUnavailable(f"reading object {self._key} from the object store failed") from exc
        if n == 0:
            self._eof = True
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._eof:
                # Unread body left: drop the connection rather than drain it.
                self._response.close()
            self._response.release_conn()
        except _NETWORK_ERRORS:
            pass
        finally:
            super().close()


class S3Store(ObjectStore):
    """Objects in one bucket, optionally under a key prefix; keys are checked by :func:`check_key`."""

    read_concurrency = 8  # each GET waits on the network: a retrieve keeps several in flight

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str | None,
        secret_key: str | SecretStr | None,
        secure: bool,
        region: str | None,
        prefix: str = "",
        storage_class: str | None = None,
    ) -> None:
        host, secure = parse_endpoint(endpoint, secure)
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise SettingsError(f"invalid setting CLOUDFILM_STORAGE_URL: bad bucket name {bucket!r}") from exc
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except InvalidDataset as exc:
                raise SettingsError(f"invalid setting CLOUDFILM_STORAGE_URL: bad key prefix {prefix!r}") from exc
        secret = secret_key.get_secret_value() if isinstance(secret_key, SecretStr) else secret_key
        if bool(access_key) != bool(secret):
            raise SettingsError("invalid setting CLOUDFILM_S3_SECRET_KEY: give both access key and secret key")
        self.endpoint = host
        self.bucket = bucket
        self.prefix = prefix
        self.secure = secure
        self.storage_class = storage_class  # x-amz-storage-class of every object this store writes
        self._access_key = access_key or ""
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._where = f"{'https' if secure else 'http'}://{host}/{bucket}"
        self._http = _http_client()
        try:
            self._client = Minio(
                host,
                access_key=access_key or None,
                secret_key=secret or None,
                secure=secure,
                region=region or None,
                http_client=self._http,
            )
        except ValueError as exc:
            raise SettingsError(f"invalid setting CLOUDFILM_S3_ENDPOINT: {exc}") from exc
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None, storage_class: str | None = None) -> S3Store:
        """Build from ``CLOUDFILM_STORAGE_URL=s3://bucket[/prefix]`` (or ``url``, a retention tier's on the
        same endpoint) and the ``CLOUDFILM_S3_*`` settings."""
        parsed = urlparse(url or settings.resolved_storage_url)
        if parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment:
            raise SettingsError("invalid setting CLOUDFILM_STORAGE_URL: expected s3://bucket or s3://bucket/prefix")
        if not settings.s3_endpoint:
            raise SettingsError("invalid setting CLOUDFILM_S3_ENDPOINT: required when STORAGE_URL is s3://")
        return cls(
            endpoint=settings.s3_endpoint,
            bucket=parsed.netloc,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            prefix=parsed.path,
            storage_class=storage_class,
        )

    # Helpers ---------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, exc: BaseException) -> NoReturn:
        log.warning("S3 %s at %s failed: %r", action, self._where, exc)
        if isinstance(exc, S3Error):
            raise StorageUnavailable(f"the object store at {self._where} refused to {action} ({exc.code})") from exc
        raise StorageUnavailable(f"cannot {action} at the object store {self._where}") from exc

    def _ensure_bucket(self) -> None:
        """Create the bucket on first use; tolerate a concurrent creator."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                if not self._client.bucket_exists(self.bucket):
                    try:
                        self._client.make_bucket(self.bucket)
                    except S3Error as exc:
                        created_by_other = exc.code in _BUCKET_EXISTS_CODES
                        if not created_by_other or not self._client.bucket_exists(self.bucket):
                            raise
            except _NETWORK_ERRORS as exc:
                self._fail("open the bucket", exc)
            self._bucket_ready = True

    def _get(self, key: str, offset: int = 0, length: int = 0) -> Any:
        """The open GET response, or None when the range starts at or past the end of the object."""
        name = self._name(key)
        self._ensure_bucket()
        try:
            return self._client.get_object(self.bucket, name, offset=offset, length=length)
        except S3Error as exc:
            if exc.code in _MISSING_KEY_CODES:
                raise NotFound(f"object {key} does not exist") from exc
            if exc.code == "InvalidRange" and offset > 0:
                return None
            self._fail("read an object", exc)
        except _NETWORK_ERRORS as exc:
            self._fail("read an object", exc)

    # ObjectStore -----------------------------------------------------------------------------

    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> None:
        name = self._name(key)
        self._ensure_bucket()
        try:
            self._client.put_object(
                self.bucket,
                name,
                stream,
                length=-1 if size is None else size,
                part_size=PART_SIZE,
                num_parallel_uploads=2,
                metadata=self._class_header(),
            )
        except _NETWORK_ERRORS as exc:
            self._fail("store an object", exc)
        if size is not None and stream.read(1):
            # The caller promised `size` bytes but the stream holds more: never keep a truncated copy.
            self.delete(key)
            raise ValueError(f"stream for {key} is longer than the {size} bytes announced")

    def _class_header(self) -> dict[str, str | list[str] | tuple[str]] | None:
        return {"x-amz-storage-class": self.storage_class} if self.storage_class else None

    def same_service(self, other: ObjectStore) -> bool:
        """Whether ``other`` is a bucket of this endpoint under the same keys (a server-side copy works)."""
        return (isinstance(other, S3Store) and other.endpoint == self.endpoint and other.secure == self.secure
                and other._access_key == self._access_key)

    def copy_from(self, source: S3Store, source_key: str, key: str) -> None:
        """Copy ``source_key`` of ``source`` (on this endpoint: :meth:`same_service`) to ``key`` here,
        inside the S3 service, giving it this store's storage class; durable when this returns."""
        name, source_name = self._name(key), source._name(source_key)
        self._ensure_bucket()
        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": "application/dicom"}
        headers |= self._class_header() or {}
        try:
            self._client.copy_object(self.bucket, name, CopySource(source.bucket, source_name),
                                     metadata=headers, metadata_directive=REPLACE)  # fmt: skip
        except S3Error as exc:
            if exc.code in _MISSING_KEY_CODES:
                raise NotFound(f"object {source_key} does not exist") from exc
            self._fail("copy an object", exc)
        except _NETWORK_ERRORS as exc:
            self._fail("copy an object", exc)

    def storage_class_of(self, key: str) -> str:
        """The object's storage class as S3 reports it (``STANDARD`` when it names none)."""
        name = self._name(key)
        self._ensure_bucket()
        try:
            stat = self._client.stat_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in _MISSING_KEY_CODES:
                raise NotFound(f"object {key} does not exist") from exc
            self._fail("look up an object", exc)
        except _NETWORK_ERRORS as exc:
            self._fail("look up an object", exc)
        return str((stat.metadata or {}).get("x-amz-storage-class") or "STANDARD")

    def open(self, key: str) -> BinaryIO:
        response = self._get(key)
        if response is None:  # pragma: no cover - no range asked, so S3 never answers InvalidRange
            raise NotFound(f"object {key} does not exist")
        return io.BufferedReader(_ResponseReader(response, key), _READ_BUFFER)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if length == 0:
            if self.head(key) is None:
                raise NotFound(f"object {key} does not exist")
            return b""
        response = self._get(key, offset, length)
        if response is None:
            return b""  # like pread past the end
        try:
            data = bytes(response.read())
        except _NETWORK_ERRORS as exc:
            response.close()
            self._fail("read an object", exc)
        finally:
            response.release_conn()
        return data

    def read_into(self, key: str, offset: int, buffer: memoryview) -> int:
        if offset < 0:
            raise ValueError("offset must not be negative")
        if not buffer:
            return 0
        response = self._get(key, offset, len(buffer))
        if response is None:
            return 0  # like pread past the end
        got = 0
        try:
            while got < len(buffer):
                n = response.readinto(buffer[got:])
                if not n:
                    break
                got += n
        except _NETWORK_ERRORS as exc:
            response.close()
            self._fail("read an object", exc)
        finally:
            response.release_conn()
        return got

    def head(self, key: str) -> ObjectInfo | None:
        name = self._name(key)
        self._ensure_bucket()
        try:
            stat = self._client.stat_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in _MISSING_KEY_CODES:
                return None
            self._fail("look up an object", exc)
        except _NETWORK_ERRORS as exc:
            self._fail("look up an object", exc)
        return ObjectInfo(key, int(stat.size or 0), stat.last_modified.timestamp() if stat.last_modified else None)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._ensure_bucket()
        try:
            self._client.remove_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in _MISSING_KEY_CODES:
                return
            self._fail("delete an object", exc)
        except _NETWORK_ERRORS as exc:
            self._fail("delete an object", exc)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._ensure_bucket()
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            for obj in self._client.list_objects(self.bucket, prefix=base + prefix, recursive=True):
                name = obj.object_name
                if obj.is_dir or name is None or not name.startswith(base):
                    continue
                modified = obj.last_modified.timestamp() if obj.last_modified else None
                yield ObjectInfo(name[len(base) :], int(obj.size or 0), modified)
        except _NETWORK_ERRORS as exc:
            self._fail("list objects", exc)

    def ping(self) -> None:
        self._bucket_ready = False
        self._ensure_bucket()

    def cleanup_temp(self, older_than_s: float, *, remove: bool = True) -> tuple[str, ...]:
        """Multipart uploads under the store's prefix begun more than ``older_than_s`` seconds ago and
        never completed: a stream whose process died mid-upload. S3 keeps their parts (and bills
        them) until they are aborted; they are never visible as objects. minio has no public call
        to list or abort them, so its request methods for the two S3 APIs are used.
        """
        self._ensure_bucket()
        cutoff = time.time() - older_than_s
        base = f"{self.prefix}/" if self.prefix else ""
        found: tuple[str, ...] = ()
        key_marker: str | None = None
        id_marker: str | None = None
        try:
            while True:
                page = self._client._list_multipart_uploads(
                    self.bucket, prefix=base, key_marker=key_marker, upload_id_marker=id_marker
                )
                for upload in page.uploads:
                    began = upload.initiated_time
                    if not upload.upload_id or began is None or began.timestamp() > cutoff:
                        continue
                    if remove and not self._abort_upload(upload.object_name, upload.upload_id):
                        continue
                    found += (f"{self.url}/{upload.object_name[len(base):]} (upload {upload.upload_id})",)
                if not page.is_truncated or not page.uploads:
                    return found
                key_marker, id_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id
        except _NETWORK_ERRORS as exc:
            self._fail("list incomplete uploads", exc)

    def _abort_upload(self, name: str, upload_id: str) -> bool:
        """Abort one multipart upload; ``False`` when its writer completed or aborted it meanwhile."""
        try:
            self._client._abort_multipart_upload(self.bucket, name, upload_id)
        except S3Error as exc:
            if exc.code == "NoSuchUpload":
                return False
            raise
        return True

    def close(self) -> None:
        self._http.clear()
