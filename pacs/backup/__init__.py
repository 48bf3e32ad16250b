"""Backups of a running archive and restores into an empty one (``cloudfilm backup`` / ``restore``)."""

from pacs.backup.service import RestoreReport, backup, restore

__all__ = ["RestoreReport", "backup", "restore"]
