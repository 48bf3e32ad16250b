"""Which plugins exist, which versions are enabled, and how to load an in-process one.

In-process plugins are found through the entry-point group ``cloudfilm.plugins`` (read with
:mod:`importlib.metadata` at every :meth:`PluginRegistry.sync`) plus any classes handed to the
registry directly (tests, embedding); each version gets a row in ``plugins`` the first time it is
seen, enabled, because installing a package is the operator's decision (disabled under a deployment
gate, :mod:`ai_plugins.benchmarks.gate`). Vendor-hosted plugins are
registered with a manifest (``POST /api/plugins``) and start disabled until an admin enables them,
because enabling one sends study data to the vendor.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ai_plugins.runner.models import PluginEnablement, PluginRecord
from ai_plugins.sdk import ENTRY_POINT_GROUP, InputFilter, Plugin, PluginInfo
from ai_plugins.sdk.plugin import NAME_PATTERN
from pacs.access import DEFAULT_PARTITION
from pacs.errors import Conflict, NotFound
from pacs.index.db import utcnow
from pacs.jobs import aware, write_transaction

log = logging.getLogger(__name__)

MAX_TIMEOUT_S = 6 * 3600.0


class PluginSource(StrEnum):
    ENTRY_POINT = "entry-point"  # in-process, from an installed package
    REMOTE = "remote"  # hosted by the vendor, called over HTTP
    PACKAGE = "package"  # an admitted algorithm package, run in the sandbox (ai_plugins.packages)


class RemoteManifest(BaseModel):
    """What a vendor registers: who the plugin is, what it wants, where and how long to call it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")
    vendor: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=1024)
    intended_use: str = Field(default="", max_length=2048)
    input_filter: InputFilter = Field(default_factory=InputFilter)
    endpoint_url: str = Field(min_length=8, max_length=1024, description="https:// (or http:// on loopback)")
    timeout_s: float = Field(default=300.0, gt=0, le=MAX_TIMEOUT_S)

    @field_validator("endpoint_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials")
        return value

    def info(self) -> PluginInfo:
        return PluginInfo(name=self.name, version=self.version, vendor=self.vendor, description=self.description,
                          intended_use=self.intended_use, input_filter=self.input_filter)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PluginView:
    """One registered plugin version and its state."""

    name: str
    version: str
    source: PluginSource
    vendor: str
    description: str
    intended_use: str
    input_filter: InputFilter
    endpoint_url: str
    entry_point: str
    timeout_s: float
    enabled: bool
    registered_by: str
    created_at: datetime
    updated_at: datetime
    installed: bool = True  # in-process plugins: importable in this process
    digest: str = ""  # algorithm packages: the SHA-256 of the admitted package file

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def runnable(self) -> bool:
        return self.enabled and self.installed

    def info(self) -> PluginInfo:
        return PluginInfo(name=self.name, version=self.version, vendor=self.vendor, description=self.description,
                          intended_use=self.intended_use, input_filter=self.input_filter,
                          package_digest=self.digest)  # fmt: skip


@dataclass(frozen=True, slots=True)
class InstalledPlugin:
    """An in-process plugin class and the ``module:qualname`` a child process imports it by."""

    ref: str
    cls: type[Plugin]

    @property
    def info(self) -> PluginInfo:
        return self.cls.info()


def plugin_ref(cls: type[Plugin]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def load_plugin_class(ref: str) -> type[Plugin]:
    """Import ``module:qualname`` and check that it is a :class:`Plugin` subclass."""
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        raise TypeError(f"{ref} is not a cloudfilm Plugin class")
    return obj


def discover_installed(extra: Iterable[type[Plugin]] = (), *, use_entry_points: bool = True) -> list[InstalledPlugin]:
    """Every plugin class of the ``cloudfilm.plugins`` entry points, then ``extra``; broken ones are logged."""
    found: list[InstalledPlugin] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP) if use_entry_points else ():
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Plugin)):
                raise TypeError("not a cloudfilm Plugin class")
            cls.info()
        except Exception as exc:  # one broken package must not hide the others
            log.error("plugin entry point %s = %s cannot be loaded: %s", ep.name, ep.value, exc)
            continue
        found.append(InstalledPlugin(plugin_ref(cls), cls))
    for cls in extra:
        cls.info()
        found.append(InstalledPlugin(plugin_ref(cls), cls))
    return found


def _view(row: Any, installed: dict[tuple[str, str], InstalledPlugin] | None) -> PluginView:
    source = PluginSource(row.source)
    return PluginView(
        name=row.name, version=row.version, source=source, vendor=row.vendor, description=row.description,
        intended_use=row.intended_use, input_filter=InputFilter.model_validate_json(row.input_filter_json or "{}"),
        endpoint_url=row.endpoint_url, entry_point=row.entry_point, timeout_s=float(row.timeout_s),
        enabled=bool(row.enabled), registered_by=row.registered_by, created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        installed=source is not PluginSource.ENTRY_POINT or installed is None or (row.name, row.version) in installed,
        digest=row.package_digest or "",
    )  # fmt: skip


class PluginRegistry:
    """Plugin registrations in the index database, plus the plugin classes installed here."""

    def __init__(self, engine: Engine, *, extra: Sequence[type[Plugin]] = (), default_timeout_s: float = 900.0,
                 use_entry_points: bool = True, gated: bool = False) -> None:  # fmt: skip
        self.engine = engine
        # under a deployment gate (ai_plugins.benchmarks.gate) a newly installed version starts disabled:
        # installing it is the operator's decision, running it on patients needs a passed evaluation
        self.gated = gated
        self.extra = tuple(extra)
        self.use_entry_points = use_entry_points
        self.default_timeout_s = default_timeout_s
        self._discovered: dict[tuple[str, str], InstalledPlugin] | None = None
        self._discovery_lock = threading.Lock()

    # --- in-process plugins --------------------------------------------------------------------

    def sync(self) -> list[PluginView]:
        """Discover installed plugins and give each new version a row (enabled); return all plugins."""
        installed = self._installed_map()
        now = utcnow()
        with write_transaction(self.engine) as conn:
            existing = {(r.name, r.version): r for r in conn.execute(select(PluginRecord))}
            for (name, version), plugin in sorted(installed.items()):
                info = plugin.info
                row = existing.get((name, version))
                timeout = float(getattr(plugin.cls, "timeout_s", self.default_timeout_s))
                values = {
                    "vendor": info.vendor, "description": info.description, "intended_use": info.intended_use,
                    "input_filter_json": info.input_filter.model_dump_json(), "entry_point": plugin.ref,
                    "timeout_s": timeout, "updated_at": now,
                }  # fmt: skip
                if row is None:
                    if any(r.name == name and r.source != PluginSource.ENTRY_POINT for r in existing.values()):
                        log.error("installed plugin %s is shadowed by a vendor's registration of that name", name)
                        continue
                    inserted = conn.execute(
                        _insert_ignore(conn).values(
                            name=name,
                            version=version,
                            source=PluginSource.ENTRY_POINT.value,
                            endpoint_url="",
                            enabled=not self.gated,
                            registered_by="",
                            created_at=now,
                            **values,
                        )  # fmt: skip
                    ).rowcount
                    if inserted and self.gated:
                        log.info("%s@%s installed; disabled until it passes the deployment gate", name, version)
                    elif inserted:  # a newly installed version supersedes the older ones
                        superseded = conn.execute(
                            update(PluginRecord)
                            .where(PluginRecord.name == name, PluginRecord.version != version,
                                   PluginRecord.source == PluginSource.ENTRY_POINT.value, PluginRecord.enabled)
                            .values(enabled=False, updated_at=now)
                        ).rowcount  # fmt: skip
                        if superseded:
                            log.info("%s@%s installed: older versions of %s disabled", name, version, name)
                elif row.source == PluginSource.ENTRY_POINT and any(
                    getattr(row, k) != v for k, v in values.items() if k != "updated_at"
                ):
                    conn.execute(update(PluginRecord).where(PluginRecord.id == row.id).values(**values))
            for (name, version), row in existing.items():
                if row.source == PluginSource.ENTRY_POINT and row.enabled and (name, version) not in installed:
                    log.warning("plugin %s@%s is enabled but not installed in this process", name, version)
        return self.list_all()

    def installed(self, name: str, version: str) -> InstalledPlugin | None:
        return self._installed_map().get((name, version))

    # --- remote plugins ------------------------------------------------------------------------

    def register_remote(self, manifest: RemoteManifest, *, registered_by: str) -> tuple[PluginView, bool]:
        """Record a vendor's manifest (disabled); ``(plugin, created)``. Versions are immutable."""
        now = utcnow()
        with write_transaction(self.engine) as conn:
            rows = list(conn.execute(select(PluginRecord).where(PluginRecord.name == manifest.name)))
            for row in rows:
                if row.source != PluginSource.REMOTE or row.registered_by != registered_by:
                    raise Conflict(f"the plugin name {manifest.name!r} belongs to another vendor")
            same = next((r for r in rows if r.version == manifest.version), None)
            values = {
                "vendor": manifest.vendor, "description": manifest.description,
                "intended_use": manifest.intended_use, "input_filter_json": manifest.input_filter.model_dump_json(),
                "endpoint_url": manifest.endpoint_url, "timeout_s": manifest.timeout_s,
            }  # fmt: skip
            if same is not None:
                if any(getattr(same, k) != v for k, v in values.items()):
                    raise Conflict(f"{manifest.name}@{manifest.version} is registered with another manifest; "
                                   "register a new version")  # fmt: skip
                created = False
            else:
                conn.execute(
                    _insert_ignore(conn).values(
                        name=manifest.name,
                        version=manifest.version,
                        source=PluginSource.REMOTE.value,
                        entry_point="",
                        enabled=False,
                        registered_by=registered_by,
                        created_at=now,
                        updated_at=now,
                        **values,
                    )  # fmt: skip
                )
                created = True
        log.info("remote plugin %s@%s registered by %s", manifest.name, manifest.version, registered_by)
        return self.get(manifest.name, manifest.version), created

    # --- state -----------------------------------------------------------------------------------

    def set_enabled(self, name: str, version: str, enabled: bool, *, partition: int = DEFAULT_PARTITION,
                    by: str = "") -> PluginView:  # fmt: skip
        """Turn one plugin version on or off in ``partition`` (jobs already queued for it are cancelled by
        the caller). The default partition's switch is the registration's own; any other partition's is
        a row of ``plugin_enablements``."""
        now = utcnow()
        with write_transaction(self.engine) as conn:
            plugin_id = conn.execute(select(PluginRecord.id).where(
                PluginRecord.name == name, PluginRecord.version == version)).scalar_one_or_none()
            if plugin_id is None:
                raise NotFound(f"no plugin {name}@{version}")
            if partition == DEFAULT_PARTITION:
                conn.execute(update(PluginRecord).where(PluginRecord.id == plugin_id)
                             .values(enabled=enabled, updated_at=now))
            else:
                dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
                values = {"enabled": enabled, "updated_by": by[:64], "updated_at": now}
                conn.execute(dialect.insert(PluginEnablement)
                             .values(partition_fk=partition, plugin_fk=plugin_id, **values)
                             .on_conflict_do_update(index_elements=["partition_fk", "plugin_fk"], set_=values))
        return self.get(name, version, partition=partition)

    def get(self, name: str, version: str, *, partition: int = DEFAULT_PARTITION) -> PluginView:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(PluginRecord).where(PluginRecord.name == name, PluginRecord.version == version)
            ).first()
            if row is None:
                raise NotFound(f"no plugin {name}@{version}")
            return self._in_partition(conn, [_view(row, self._installed_map())], [row.id], partition)[0]

    def latest(self, name: str, *, enabled_only: bool = True, partition: int = DEFAULT_PARTITION) -> PluginView:
        """The newest registered version of ``name`` (the ones enabled in ``partition`` only, by default)."""
        versions = [p for p in self.list_all(partition=partition)
                    if p.name == name and (p.enabled or not enabled_only)]  # fmt: skip
        if not versions:
            raise NotFound(f"no {'enabled ' if enabled_only else ''}plugin named {name!r}")
        return max(versions, key=lambda p: (_version_key(p.version), p.created_at))

    def list_all(self, *, partition: int = DEFAULT_PARTITION) -> list[PluginView]:
        with self.engine.connect() as conn:
            return self.list_in(conn, partition=partition)

    def list_in(self, conn: Connection, *, partition: int = DEFAULT_PARTITION) -> list[PluginView]:
        """Every registration, read on the caller's connection (the router runs in a transaction), with
        ``enabled`` as it stands in ``partition``."""
        installed = self._discovered  # no discovery (imports) inside the caller's transaction
        rows = list(conn.execute(select(PluginRecord).order_by(PluginRecord.name, PluginRecord.created_at)))
        return self._in_partition(conn, [_view(r, installed) for r in rows], [r.id for r in rows], partition)

    @staticmethod
    def _in_partition(conn: Connection, views: list[PluginView], ids: list[int], partition: int) -> list[PluginView]:
        """``views`` (of the registrations ``ids``) with ``enabled`` as in ``partition``: off in a partition
        other than the default one unless a row there turns it on."""
        if partition == DEFAULT_PARTITION:
            return views
        on = set(conn.execute(select(PluginEnablement.plugin_fk).where(
            PluginEnablement.partition_fk == partition, PluginEnablement.enabled.is_(True))).scalars())
        return [replace(v, enabled=i in on) for v, i in zip(views, ids, strict=True)]

    def _installed_map(self) -> dict[tuple[str, str], InstalledPlugin]:
        """The plugins installed here, discovered once (discovery imports the plugin packages)."""
        with self._discovery_lock:
            if self._discovered is None:
                found = discover_installed(self.extra, use_entry_points=self.use_entry_points)
                self._discovered = {(p.info.name, p.info.version): p for p in found}
            return self._discovered


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders ``1.10.0`` after ``1.9.2``; non-numeric parts compare as text after numbers."""
    out: list[tuple[int, int | str]] = []
    for part in version.replace("-", ".").replace("+", ".").split("."):
        out.append((0, int(part)) if part.isdigit() else (1, part))
    return tuple(out)


def _insert_ignore(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(PluginRecord).on_conflict_do_nothing(index_elements=["name", "version"])

