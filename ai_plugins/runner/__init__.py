"""The AI runner: plugin registry, routing of stable studies to jobs, workers that execute them.

Stable studies (``pacs.stability``) become plugin jobs (``pacs.jobs``) in one transaction; workers
run each job in a child process (in-process plugins) or by calling the vendor's endpoint (hosted
plugins), write the findings as DICOM SR/SEG and store them through the archive's ingest path.
"""

from ai_plugins.runner.registry import PluginRegistry, PluginSource, PluginView, RemoteManifest
from ai_plugins.runner.routing import JOB_KIND, Router
from ai_plugins.runner.worker import WorkerPool, job_queue, worker_service

__all__ = [
    "JOB_KIND",
    "PluginRegistry",
    "PluginSource",
    "PluginView",
    "RemoteManifest",
    "Router",
    "WorkerPool",
    "job_queue",
    "worker_service",
]
