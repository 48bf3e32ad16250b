"""An edge worker's admitted packages: one environment per package file's SHA-256, under the
worker's cache directory (``--cache-dir``; default ``$XDG_CACHE_HOME/cloudfilm/edge``).

A package is fetched from the archive (``/api/edge/packages/{sha256}``) the first time a job of it is
leased here, and installed by the archive's own installer
(:func:`ai_plugins.packages.environment.install_environment`): the file must hash to the SHA-256 the
lease names, or nothing is installed; its dependency wheels are installed offline, so a site that
reaches no package index runs packages that ship theirs. Later jobs of the same digest reuse the
environment; a digest names one file forever, so the cache is never revalidated.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ai_plugins.edge.client import ArchiveClient
from ai_plugins.packages.environment import install_environment, installed_manifest
from ai_plugins.packages.manifest import PackageManifest
from ai_plugins.sandbox import PackageEnv

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cloudfilm/edge`` (``~/.cache`` when unset or relative, as the XDG spec says)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cloudfilm" / "edge"


class PackageCache:
    """Environments of admitted packages on this edge machine, built once per SHA-256."""

    def __init__(self, root: Path, client: ArchiveClient) -> None:
        self.root = root
        self.client = client
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def env_dir(self, digest: str) -> Path:
        return self.root / "packages" / "envs" / digest

    def environment(self, digest: str) -> tuple[PackageEnv, PackageManifest]:
        """The environment of the package ``digest`` (fetched and installed if this machine has none)
        and its manifest. :class:`~ai_plugins.packages.environment.DigestMismatch` when the file the
        archive sent is not that one; :class:`~ai_plugins.edge.client.ArchiveRefused` or an
        :class:`httpx.HTTPError` when it sent none."""
        target = self.env_dir(digest)
        with self._lock(digest):  # one fetch per digest on this machine; other processes race safely
            if not target.is_dir():
                data = self._fetch(digest)
                if install_environment(data, digest, target):
                    log.info("package sha256 %s (%d bytes) installed in %s", digest, len(data), target)
        manifest = installed_manifest(target)
        return PackageEnv(target, manifest.entry), manifest

    def _fetch(self, digest: str) -> bytes:
        body = bytearray()
        self.client.download(f"/api/edge/packages/{digest}", body.extend)
        log.info("package sha256 %s fetched from %s (%d bytes)", digest, self.client.base_url, len(body))
        return bytes(body)

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())
