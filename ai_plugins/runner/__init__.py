"""The AI runner: plugin registry, routing of stable studies to jobs, the one worker that runs jobs.

Stable studies (``pacs.stability``) become plugin jobs (``pacs.jobs``) in one transaction; the
worker claims jobs of every kind and hands each to the handler of its kind (clinical plugin runs,
benchmark cases and scorings); a plugin runs in a child process (installed plugins) or by a call
to the vendor's endpoint (hosted plugins), its findings written as DICOM SR/SEG and stored through
the archive's ingest path. The worker is :mod:`ai_plugins.runner.worker` (not imported here: it
imports the benchmark handlers, which import this package).
"""

from ai_plugins.runner.handler import job_queue
from ai_plugins.runner.registry import PluginRegistry, PluginSource, PluginView, RemoteManifest
from ai_plugins.runner.routing import JOB_KIND, Router

__all__ = [
    "JOB_KIND",
    "PluginRegistry",
    "PluginSource",
    "PluginView",
    "RemoteManifest",
    "Router",
    "job_queue",
]
