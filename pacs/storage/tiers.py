"""Retention tiers: an instance's object moved to colder storage keeps working through one store.

A moved object's key is its old key under ``_tiers/<tier>/`` (the index's ``object_key`` says where
every object lives). :class:`TieredStore` hands each call to the store that holds the key: a
tier's own store (another bucket or directory, or the archive's bucket written with a colder S3
storage class) for ``_tiers/<tier>/…``, the archive's store for everything else. Everything that
reads an instance (WADO, C-MOVE/C-GET, the viewer, plugins, backups, fsck) thus reads a moved one
as before, only slower where the tier is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from pacs.errors import NotFound, SettingsError
from pacs.retention.rules import Tier
from pacs.settings import Settings
from pacs.storage.base import ObjectInfo, ObjectStore, StagedObject
from pacs.storage.references import TIER_PREFIX

log = logging.getLogger(__name__)

#: Above this, S3 refuses a single server-side copy; the bytes are streamed through instead.
_COPY_LIMIT = 5 * 1024**3


def tier_key(tier: str, key: str) -> str:
    """Where ``key`` (an instance's key in any tier) lives in ``tier``."""
    return f"{TIER_PREFIX}{tier}/{base_key(key)}"


def base_key(key: str) -> str:
    """The instance's key in the archive's own store, whichever tier ``key`` names."""
    if key.startswith(TIER_PREFIX):
        return key[len(TIER_PREFIX):].partition("/")[2]
    return key


def tier_of(key: str) -> str | None:
    """The tier ``key`` lives in, or ``None`` for the archive's own store."""
    if key.startswith(TIER_PREFIX):
        return key[len(TIER_PREFIX):].partition("/")[0]
    return None


def open_tier(settings: Settings, name: str, tier: Tier) -> ObjectStore:
    """The store of one tier: its ``url`` (default the archive's), with its storage class."""
    url = tier.url or settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if tier.storage_class:
            raise SettingsError(f"invalid setting CLOUDFILM_RETENTION_TIERS: tier {name!r} sets a storage_class "
                                "but lives on a filesystem store")
        from pacs.storage.filesystem import FilesystemStore

        return FilesystemStore(Path(parsed.path))
    from pacs.storage.s3 import S3Store

    if not settings.s3_endpoint:
        raise SettingsError(f"invalid setting CLOUDFILM_S3_ENDPOINT: required by retention tier {name!r}")
    return S3Store.from_settings(settings, url, tier.storage_class)


class TieredStore(ObjectStore, observed=False):
    """The archive's store and its tiers' stores behind one interface (each backend observes itself)."""

    def __init__(self, primary: ObjectStore, tiers: dict[str, ObjectStore]) -> None:
        self.primary = primary
        self.tiers = tiers
        self.url = primary.url

    def route(self, key: str) -> ObjectStore:
        """The store that holds ``key`` (the key is the same there)."""
        tier = tier_of(key)
        if tier is None:
            return self.primary
        store = self.tiers.get(tier)
        if store is None:
            raise NotFound(f"object {key} is in tier {tier!r}, which is no longer configured")
        return store

    def _apart(self) -> list[tuple[str, ObjectStore]]:
        """The tiers whose objects the archive's store does not list itself (another location)."""
        return [(name, s) for name, s in self.tiers.items() if s.url != self.primary.url]

    def copy(self, key: str, target: str) -> None:
        """Copy the object ``key`` to ``target`` (another tier's key): inside S3 when both are buckets
        of one endpoint, else streamed through; durable in the target's store when this returns."""
        from pacs.storage.s3 import S3Store

        source, dest = self.route(key), self.route(target)
        info = source.head(key)
        if info is None:
            raise NotFound(f"object {key} does not exist")
        if isinstance(dest, S3Store) and isinstance(source, S3Store) and dest.same_service(source) \
                and info.size <= _COPY_LIMIT:
            dest.copy_from(source, key, target)
            return
        with source.open(key) as stream:
            dest.put_stream(target, stream, info.size)

    # ObjectStore ------------------------------------------------------------------------------

    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> None:
        self.route(key).put_stream(key, stream, size)

    def put_file(self, key: str, path: Path) -> None:
        self.route(key).put_file(key, path)

    def stage_bytes(self, data: bytes) -> StagedObject:
        return self.primary.stage_bytes(data)  # ingest publishes instance keys: the archive's store

    def open(self, key: str) -> BinaryIO:
        return self.route(key).open(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.route(key).get_range(key, offset, length)

    def head(self, key: str) -> ObjectInfo | None:
        return self.route(key).head(key)

    def delete(self, key: str) -> None:
        self.route(key).delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        yield from self.primary.list(prefix)
        for name, store in self._apart():
            own = f"{TIER_PREFIX}{name}/"
            if own.startswith(prefix) or prefix.startswith(own):
                yield from (o for o in store.list(max(own, prefix, key=len)) if o.key.startswith(own))

    def ping(self) -> None:
        self.primary.ping()

    def cleanup_temp(self, older_than_s: float, *, remove: bool = True) -> tuple[str, ...]:
        found = self.primary.cleanup_temp(older_than_s, remove=remove)
        for _name, store in self._apart():
            found += store.cleanup_temp(older_than_s, remove=remove)
        return found

    def probe_write(self) -> None:
        self.primary.probe_write()

    def close(self) -> None:
        self.primary.close()
        for store in self.tiers.values():
            store.close()
