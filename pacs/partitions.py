"""Partitions (tenants): several hospitals in one archive, each with its own AE titles, DICOMweb base
path (``/dicomweb/p/{slug}/…``), users and data.

Every patient, study, series and instance row belongs to one partition (``partition_fk``); UIDs are
unique within a partition only, so the same SOP Instance UID may be stored by two hospitals. The
partition is part of the :class:`~pacs.access.AccessScope`, so the one access filter keeps every
query and retrieve inside it. Partition 1, ``default``, holds what a single-hospital installation
holds: its AE title is ``CLOUDFILM_AE_TITLE``, its base path ``/dicomweb/``, its object keys today's.

Partitions are configured in TOML (``[partitions.<slug>] ae_titles = [...]``) and recorded in the
``partitions`` table on start, where their ids stay fixed once given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pacs.access import DEFAULT_PARTITION
from pacs.errors import SettingsError
from pacs.index.db import utcnow
from pacs.index.models import PartitionRow

DEFAULT_SLUG = "default"
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class PartitionConfig(BaseModel):
    """One ``[partitions.<slug>]`` table."""

    ae_titles: list[str] = Field(default_factory=list)
    name: str = ""

    @field_validator("ae_titles")
    @classmethod
    def _check_titles(cls, value: list[str]) -> list[str]:
        titles = [t.strip() for t in value]
        for title in titles:
            if not 0 < len(title) <= 16 or "\\" in title or not title.isprintable():
                raise ValueError(f"AE title {title!r} must be 1 to 16 printable characters without backslash")
        return titles


@dataclass(frozen=True, slots=True)
class Partition:
    id: int
    slug: str
    ae_titles: tuple[str, ...]
    name: str = ""

    @property
    def key_prefix(self) -> str:
        """Prepended to object keys: none for the default partition (today's layout), ``p/<slug>/`` else."""
        return "" if self.id == DEFAULT_PARTITION else f"p/{self.slug}/"


def default_partition(ae_title: str = "") -> Partition:
    return Partition(DEFAULT_PARTITION, DEFAULT_SLUG, (ae_title,) if ae_title else ())


def check_partitions(partitions: dict[str, PartitionConfig], archive_ae_title: str) -> None:
    """Refuse slugs that are not URL-safe, the reserved slug, and an AE title claimed twice."""
    owner: dict[str, str] = {archive_ae_title: DEFAULT_SLUG}
    for slug, config in partitions.items():
        if not _SLUG_RE.match(slug) or slug == DEFAULT_SLUG:
            raise ValueError(f"partition name {slug!r} must be 1 to 32 lower-case letters, digits or '-' "
                             f"(and not {DEFAULT_SLUG!r})")
        if not config.ae_titles:
            raise ValueError(f"partition {slug!r} needs at least one AE title")
        for title in config.ae_titles:
            if title in owner:
                raise ValueError(f"AE title {title!r} of partition {slug!r} is already {owner[title]!r}'s")
            owner[title] = slug


class PartitionDirectory:
    """The partitions of this installation, by id, slug and AE title."""

    def __init__(self, partitions: list[Partition]) -> None:
        self._by_id = {p.id: p for p in partitions}
        self._by_slug = {p.slug: p for p in partitions}
        self._by_title = {t: p for p in partitions for t in p.ae_titles}

    @classmethod
    def single(cls, ae_title: str) -> PartitionDirectory:
        return cls([default_partition(ae_title)])

    @property
    def default(self) -> Partition:
        return self._by_id[DEFAULT_PARTITION]

    @property
    def multiple(self) -> bool:
        return len(self._by_id) > 1

    def all(self) -> list[Partition]:
        return sorted(self._by_id.values(), key=lambda p: p.id)

    def ae_titles(self) -> frozenset[str]:
        return frozenset(self._by_title)

    def by_id(self, partition_id: int) -> Partition | None:
        return self._by_id.get(partition_id)

    def by_slug(self, slug: str) -> Partition | None:
        return self._by_slug.get(slug)

    def for_called_ae(self, called_ae_title: str) -> Partition | None:
        """The partition a DIMSE association addressed (PS3.8 7.1.1.5 Called AE Title), if any."""
        return self._by_title.get(called_ae_title.strip())


def sync_partitions(engine: Engine, ae_title: str, partitions: dict[str, PartitionConfig]) -> PartitionDirectory:
    """Record the configured partitions (a new slug gets the next id; ids never change) and return them.

    A partition removed from the configuration keeps its row and its data, and is no longer
    reachable: nothing is deleted that was not asked to be."""
    now = utcnow()
    with engine.begin() as conn:
        rows = {r.slug: r for r in conn.execute(select(PartitionRow))}
        wanted = {DEFAULT_SLUG: PartitionConfig(ae_titles=[ae_title], name="")} | partitions
        for slug, config in wanted.items():
            titles = json.dumps(config.ae_titles)
            if slug not in rows:  # another process starting at once may insert it too
                ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                conn.execute(ins(PartitionRow).values(slug=slug, name=config.name, ae_titles=titles, created_at=now)
                             .on_conflict_do_nothing(index_elements=["slug"]))
            elif rows[slug].ae_titles != titles or rows[slug].name != config.name:
                conn.execute(update(PartitionRow).where(PartitionRow.slug == slug)
                             .values(ae_titles=titles, name=config.name))
        found = list(conn.execute(select(PartitionRow).where(PartitionRow.slug.in_(sorted(wanted)))))
    directory = PartitionDirectory([Partition(r.id, r.slug, tuple(json.loads(r.ae_titles)), r.name) for r in found])
    if directory.by_slug(DEFAULT_SLUG) is None or directory.default.slug != DEFAULT_SLUG:
        raise SettingsError(f"the index's partition {DEFAULT_PARTITION} is not {DEFAULT_SLUG!r}; "
                            "the partitions table was changed by hand")
    return directory
