"""Plugin registrations (one row per plugin version, with its enabled state) and their results.

The tables live in the index database (migration ``0003``). A row is written when an installed
plugin is first discovered (entry point) or when a vendor registers a hosted one; an admin turns
each version on or off. ``plugin_results`` lists every SR/SEG a job stores, recorded before the
object is stored, so the router never feeds a plugin's output back to a plugin (not even while the
job is still running or after a failed attempt) and the API can show what each run produced.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId


class PluginRecord(Base):
    __tablename__ = "plugins"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_plugins_name_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # "entry-point" | "remote" | "package"
    vendor: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    intended_use: Mapped[str] = mapped_column(Text, default="")
    input_filter_json: Mapped[str] = mapped_column(Text, default="{}")
    endpoint_url: Mapped[str] = mapped_column(String(1024), default="")
    entry_point: Mapped[str] = mapped_column(String(256), default="")  # "module:Class" for in-process plugins
    timeout_s: Mapped[float] = mapped_column(Float, default=900.0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_by: Mapped[str] = mapped_column(String(64), default="")
    # An algorithm package's SHA-256 (migration 0006): what runs, named in reports and every SR/SEG.
    package_digest: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PluginResult(Base):
    """One DICOM object (SR or SEG) a plugin job stored in the study."""

    __tablename__ = "plugin_results"
    __table_args__ = (
        Index("ix_plugin_results_study", "study_uid", "plugin_name", "created_at"),
        Index("ix_plugin_results_job", "job_id"),
        Index("ix_plugin_results_partition", "partition_fk", "study_uid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(BigId)
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    study_uid: Mapped[str] = mapped_column(String(64))
    plugin_name: Mapped[str] = mapped_column(String(64))
    plugin_version: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(8))  # "SR" | "SEG"
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    summary_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PluginEnablement(Base):
    """A plugin version enabled (or not) in a partition other than the default one (migration 0020).

    The default partition's switch is ``plugins.enabled``; any other partition runs a version only
    where a row here enables it, so a new hospital starts with no plugin running on its studies."""

    __tablename__ = "plugin_enablements"

    partition_fk: Mapped[int] = mapped_column(ForeignKey("partitions.id", ondelete="CASCADE"), primary_key=True)
    plugin_fk: Mapped[int] = mapped_column(ForeignKey("plugins.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_by: Mapped[str] = mapped_column(String(64), default="", server_default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
