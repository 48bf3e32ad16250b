"""Object storage backends behind one interface."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pacs.errors import SettingsError
from pacs.settings import Settings
from pacs.storage.base import ObjectInfo, ObjectStore, StagedObject
from pacs.storage.keys import check_key, instance_key

__all__ = ["ObjectInfo", "ObjectStore", "StagedObject", "check_key", "instance_key", "open_store"]


def open_store(settings: Settings) -> ObjectStore:
    """The store named by ``CLOUDFILM_STORAGE_URL`` (``file://...`` or ``s3://bucket``), with the
    retention tiers' stores behind it when ``[retention.tiers]`` names any."""
    primary = _open_primary(settings)
    if not settings.retention_tiers:
        return primary
    from pacs.storage.tiers import TieredStore, open_tier

    return TieredStore(primary, {name: open_tier(settings, name, tier)
                                 for name, tier in settings.retention_tiers.items()})  # fmt: skip


def _open_primary(settings: Settings) -> ObjectStore:
    url = settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from pacs.storage.filesystem import FilesystemStore

        return FilesystemStore(Path(parsed.path))
    if parsed.scheme == "s3":
        from pacs.storage.s3 import S3Store

        if not settings.s3_endpoint:
            raise SettingsError("invalid setting CLOUDFILM_S3_ENDPOINT: required when STORAGE_URL is s3://")
        return S3Store.from_settings(settings)
    raise SettingsError(f"invalid setting CLOUDFILM_STORAGE_URL: unsupported scheme {parsed.scheme!r}")
