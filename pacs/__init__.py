"""cloudfilm's archive core: settings, domain types, index, object storage, ingest, query, retrieve."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cloudfilm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
