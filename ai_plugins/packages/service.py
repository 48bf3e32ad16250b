"""Uploading, admitting and finding algorithm packages.

A vendor uploads a package file: it is checked (manifest, members) without running any of it,
kept in the object store under ``_packages/<sha256>`` (:mod:`pacs.storage.references`: fsck and
backups know it) and recorded as ``uploaded``. An admin admits it: the stored file's digest is
verified again, the package is unpacked into ``DATA_DIR/packages/envs/<sha256>`` with its dependency
wheels installed there offline (``pip --no-index --no-deps --target``), and its plugin version is
registered (``source = package``, disabled for clinical studies until an admin enables it). Only
admitted packages run, and only in the sandbox (:mod:`ai_plugins.sandbox`); their digest names them
in evaluation reports and in every SR/SEG.

The environment is a cache of this node's: the file in the object store and the row in the index
decide what runs. A node (``serve`` or ``cloudfilm worker``, of several on one database and store,
or an archive restored from a backup) that must run an admitted package and lacks its environment
builds it from the stored file, whose SHA-256 must be the one the index recorded.

Packages uploaded before the files moved into the object store lie in ``DATA_DIR/packages/files``;
each node moves the ones it holds into the store when it starts (:meth:`PackageService.migrate_legacy`),
and an admission or a run that finds the object missing looks there too.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ai_plugins.packages.environment import install_environment
from ai_plugins.packages.manifest import InvalidPackage, PackageManifest, read_manifest
from ai_plugins.packages.models import PackageRow
from ai_plugins.runner.models import PluginRecord
from ai_plugins.sandbox import Limits, PackageEnv
from pacs.archive import Archive
from pacs.errors import Conflict, NotFound
from pacs.index.db import utcnow
from pacs.jobs import aware, write_transaction
from pacs.settings import Settings
from pacs.storage.references import package_key

log = logging.getLogger(__name__)

SOURCE = "package"


@dataclass(frozen=True, slots=True)
class PackageView:
    name: str
    version: str
    vendor: str
    digest: str
    filename: str
    size: int
    manifest: PackageManifest
    status: str
    uploaded_by: str
    admitted_by: str
    created_at: datetime
    admitted_at: datetime | None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


def _view(row: Any) -> PackageView:
    return PackageView(row.name, row.version, row.vendor, row.digest, row.filename, row.size,
                       PackageManifest.model_validate_json(row.manifest_json), row.status, row.uploaded_by,
                       row.admitted_by, aware(row.created_at),
                       None if row.admitted_at is None else aware(row.admitted_at))  # fmt: skip


def packages_dir(settings: Settings) -> Path:
    return settings.data_dir / "packages"


def env_dir(settings: Settings, digest: str) -> Path:
    """This node's environment of the package ``digest`` (a cache: rebuilt from the stored file)."""
    return packages_dir(settings) / "envs" / digest


def legacy_file(settings: Settings, digest: str) -> Path:
    """Where a package file uploaded before the files moved into the object store lies."""
    return packages_dir(settings) / "files" / digest


def site_limits(settings: Settings) -> Limits:
    """The most a package may use per case on this site."""
    return Limits(memory_mb=settings.package_max_memory_mb, cpu_s=settings.package_max_cpu_s,
                  scratch_mb=settings.package_max_scratch_mb, max_processes=settings.package_max_processes,
                  wall_s=6 * 3600.0)  # fmt: skip


class PackageService:
    def __init__(self, archive: Archive) -> None:
        self.engine: Engine = archive.engine
        self.settings: Settings = archive.settings
        self.store = archive.store

    # --- upload ------------------------------------------------------------------------------

    def upload(self, data: bytes, *, filename: str, uploaded_by: str) -> tuple[PackageView, bool]:
        """Check and keep a package file; ``(package, created)``. Versions are immutable."""
        if len(data) > self.settings.package_max_upload_mb << 20:
            raise InvalidPackage(f"the package is larger than {self.settings.package_max_upload_mb} MiB")
        if not data:
            raise InvalidPackage("the package file is empty")
        manifest = read_manifest(data)
        digest = hashlib.sha256(data).hexdigest()
        with write_transaction(self.engine) as conn:
            taken = conn.execute(select(PluginRecord.source, PluginRecord.registered_by)
                                 .where(PluginRecord.name == manifest.name)).all()  # fmt: skip
            if any(source != SOURCE or by != uploaded_by for source, by in taken):
                raise Conflict(f"the plugin name {manifest.name!r} belongs to another plugin or vendor")
            rows = conn.execute(select(PackageRow).where(PackageRow.name == manifest.name)).all()
            if any(r.uploaded_by != uploaded_by for r in rows):
                raise Conflict(f"the plugin name {manifest.name!r} belongs to another vendor")
            same = next((r for r in rows if r.version == manifest.version), None)
            if same is not None:
                if same.digest != digest:
                    raise Conflict(f"{manifest.name}@{manifest.version} was uploaded with other contents; "
                                   "upload a new version")  # fmt: skip
                self._store_file(data, digest)  # the same file again repairs a lost or damaged stored copy
                return _view(same), False
            # Stored before the row commits: a crash in between leaves an orphan for fsck, never a row
            # without its file.
            self._store_file(data, digest)
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(dialect.insert(PackageRow).values(
                name=manifest.name, version=manifest.version, vendor=manifest.vendor, digest=digest,
                filename=Path(filename).name[:256], size=len(data), manifest_json=manifest.model_dump_json(),
                status="uploaded", uploaded_by=uploaded_by[:64], admitted_by="", created_at=utcnow())
                .on_conflict_do_nothing())  # fmt: skip
        log.info("package %s@%s (sha256 %s) uploaded by %s", manifest.name, manifest.version, digest, uploaded_by)
        return self.get(manifest.name, manifest.version), True

    # --- admission ---------------------------------------------------------------------------

    def admit(self, name: str, version: str, *, admitted_by: str) -> PackageView:
        """Install the package into its own environment and register its plugin version."""
        package = self.get(name, version)
        if package.status == "admitted":  # on this node or another: the first admission's record stays
            self.runnable(package.digest)
            return package
        self._install(self._stored_file(package), package.digest)
        manifest = package.manifest
        now = utcnow()
        with write_transaction(self.engine) as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(dialect.insert(PluginRecord).values(
                name=name, version=version, source=SOURCE, vendor=manifest.vendor, description=manifest.description,
                intended_use=manifest.intended_use, input_filter_json=manifest.input_filter.model_dump_json(),
                endpoint_url="", entry_point=manifest.entry, timeout_s=manifest.resources.wall_s, enabled=False,
                registered_by=package.uploaded_by, package_digest=package.digest, created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=["name", "version"]))  # fmt: skip
            conn.execute(update(PackageRow).where(PackageRow.digest == package.digest)
                         .values(status="admitted", admitted_by=admitted_by[:64], admitted_at=now))  # fmt: skip
        log.info("package %s (sha256 %s) admitted by %s", package.key, package.digest, admitted_by)
        return self.get(name, version)

    # --- the file in the object store ----------------------------------------------------------

    def _store_file(self, data: bytes, digest: str) -> None:
        """Write the package file to the object store and read it back: what is kept is what was checked."""
        key = package_key(digest)
        self.store.put_bytes(key, data)
        if hashlib.sha256(self.store.get_bytes(key)).hexdigest() != digest:
            raise Conflict("the object store did not keep the package file intact; upload it again")

    def _stored_file(self, package: PackageView) -> bytes:
        """The package's file from the object store, verified against the digest the index recorded
        (moved there first from this node's data directory if it was uploaded before the store)."""
        try:
            data = self.store.get_bytes(package_key(package.digest))
        except NotFound:
            if not self._migrate(package.digest):
                raise Conflict(f"the file of {package.key} is missing from the object store; "
                               "upload it again") from None  # fmt: skip
            data = self.store.get_bytes(package_key(package.digest))
        if hashlib.sha256(data).hexdigest() != package.digest:
            raise Conflict(f"the stored file of {package.key} no longer matches its digest; upload it again")
        return data

    def _migrate(self, digest: str) -> bool:
        """Move this node's pre-store file of ``digest`` into the object store; False if it has none."""
        path = legacy_file(self.settings, digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False
        if hashlib.sha256(data).hexdigest() != digest:
            log.warning("package file %s does not match its name; not moved into the object store", path)
            return False
        self._store_file(data, digest)
        path.unlink(missing_ok=True)
        log.info("package file %s moved into the object store as %s", digest, package_key(digest))
        return True

    def migrate_legacy(self) -> int:
        """At node start: move the package files this node's data directory still holds (uploaded
        before the files moved into the object store) into the store; how many were moved."""
        folder = packages_dir(self.settings) / "files"
        if not folder.is_dir():
            return 0
        with self.engine.connect() as conn:
            digests = set(conn.execute(select(PackageRow.digest)).scalars())
        moved = 0
        for path in sorted(folder.iterdir()):
            if path.name not in digests:
                continue  # not indexed: a crash before the row committed; left for a human
            if self.store.head(package_key(path.name)) is None:
                moved += self._migrate(path.name)
            else:
                path.unlink(missing_ok=True)  # already in the store (moved by another node)
        return moved

    # --- the environment, this node's cache ------------------------------------------------------

    def _install(self, data: bytes, digest: str) -> None:
        """Install ``data`` (verified against ``digest`` once more) into this node's environment of it."""
        install_environment(data, digest, env_dir(self.settings, digest))

    # --- reading -----------------------------------------------------------------------------

    def get(self, name: str, version: str) -> PackageView:
        with self.engine.connect() as conn:
            row = conn.execute(select(PackageRow).where(PackageRow.name == name, PackageRow.version == version)
                               ).first()  # fmt: skip
        if row is None:
            raise NotFound(f"no package {name}@{version}")
        return _view(row)

    def by_digest(self, digest: str) -> PackageView:
        with self.engine.connect() as conn:
            row = conn.execute(select(PackageRow).where(PackageRow.digest == digest)).first()
        if row is None:
            raise NotFound("no package with that digest")
        return _view(row)

    def list_packages(self, *, uploaded_by: str | None = None) -> list[PackageView]:
        stmt = select(PackageRow).order_by(PackageRow.name, PackageRow.created_at)
        if uploaded_by is not None:
            stmt = stmt.where(PackageRow.uploaded_by == uploaded_by)
        with self.engine.connect() as conn:
            return [_view(r) for r in conn.execute(stmt).all()]

    def admitted(self, digest: str) -> PackageView:
        """The admitted package of ``digest``; :class:`Conflict` for one that is not admitted."""
        package = self.by_digest(digest)
        if package.status != "admitted":
            raise Conflict(f"package {package.key} is not admitted on this archive")
        return package

    def limits(self, package: PackageView) -> Limits:
        """What one case of ``package`` may use here: its manifest's resources, capped by the site's."""
        return package.manifest.resources.limits().capped(site_limits(self.settings))

    def runnable(self, digest: str) -> tuple[PackageEnv, Limits]:
        """The environment and limits of an admitted package; :class:`Conflict` for any other."""
        package = self.admitted(digest)
        env = env_dir(self.settings, digest)
        if not env.is_dir():  # admitted through another node, or restored from a backup
            try:
                self._install(self._stored_file(package), digest)
            except InvalidPackage as exc:
                raise Conflict(f"package {package.key} cannot be installed on this node: {exc}") from None
            log.info("package %s (sha256 %s) installed on this node from the object store", package.key, digest)
        return PackageEnv(env, package.manifest.entry), self.limits(package)
