"""Algorithm packages (migration ``0006``): what a vendor uploaded, and whether an admin admitted it.

The uploaded file is kept in the object store under ``_packages/<digest>`` (its SHA-256; fsck and
backups find it through ``pacs.storage.references``); admission installs it into an environment of
its own (``DATA_DIR/packages/envs/<digest>``, each node's cache) and registers its plugin version
(``plugins.source = 'package'``, ``plugins.package_digest``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId


class PackageRow(Base):
    __tablename__ = "plugin_packages"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_plugin_packages_name_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    vendor: Mapped[str] = mapped_column(String(128), default="")
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the uploaded file
    filename: Mapped[str] = mapped_column(String(256), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest_json: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), default="uploaded")  # uploaded | admitted
    uploaded_by: Mapped[str] = mapped_column(String(64), default="")
    admitted_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    admitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
