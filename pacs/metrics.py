"""Prometheus metrics of the archive (exposed by viewer_api at /metrics)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram

INSTANCES_STORED = Counter("cloudfilm_instances_stored_total", "Instances newly stored or replaced")
BYTES_STORED = Counter("cloudfilm_bytes_stored_total", "Bytes of instances newly stored or replaced")
INGEST_REJECTS = Counter("cloudfilm_ingest_rejects_total", "Instances not stored, by reason", ["reason"])
INGEST_RESULTS = Counter("cloudfilm_ingest_results_total", "Ingest outcomes", ["outcome"])
INGEST_LATENCY = Histogram(
    "cloudfilm_ingest_seconds",
    "Time to store and index one instance",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_STORED = {"stored", "replaced"}
_REJECTED = {"invalid", "not-dicom", "unavailable"}


def observe_ingest(outcome: str, size: int, seconds: float) -> None:
    INGEST_RESULTS.labels(outcome).inc()
    INGEST_LATENCY.observe(seconds)
    if outcome in _STORED:
        INSTANCES_STORED.inc()
        BYTES_STORED.inc(size)
    elif outcome in _REJECTED:
        INGEST_REJECTS.labels(outcome).inc()


# --- what on-call looks at (README "Logs and metrics") -------------------------------------------

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

STORE_REQUEST_SECONDS = Histogram(
    "cloudfilm_store_request_seconds", "Time to answer one C-STORE request or one STOW-RS request", ["route"],
    buckets=_LATENCY)
STORE_REQUESTS = Counter(
    "cloudfilm_store_requests_total", "C-STORE requests by DIMSE status and STOW-RS requests by HTTP status",
    ["route", "status"])
ASSOCIATIONS_ACTIVE = Gauge("cloudfilm_dimse_associations_active", "DICOM associations holding a slot now",
                            multiprocess_mode="livesum")  # summed over the live processes of a node
ASSOCIATIONS = Counter("cloudfilm_dimse_associations_total", "DICOM associations requested, by result", ["result"])
JOB_SECONDS = Histogram("cloudfilm_job_seconds", "Duration of one job attempt", ["kind", "plugin"],
                        buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600))
JOB_ATTEMPTS = Counter("cloudfilm_job_attempts_total", "Job attempts by outcome (succeeded, retrying, "
                       "failed = dead-lettered, cancelled, released, lease-lost)", ["kind", "plugin", "outcome"])
OBJECT_STORE_SECONDS = Histogram("cloudfilm_object_store_seconds", "Object store calls", ["op"], buckets=_LATENCY)
OBJECT_STORE_ERRORS = Counter("cloudfilm_object_store_errors_total", "Object store calls that failed (not a "
                              "missing object)", ["op"])
DATABASE_SECONDS = Histogram("cloudfilm_database_statement_seconds", "Index database statements", buckets=_LATENCY)
DATABASE_ERRORS = Counter("cloudfilm_database_errors_total", "Index database statements or connections that failed")


def observe_store_request(route: str, status: str, seconds: float) -> None:
    STORE_REQUEST_SECONDS.labels(route).observe(seconds)
    STORE_REQUESTS.labels(route, status).inc()


_T = TypeVar("_T", bound=Callable[..., Any])


def timed_store_call(op: str, method: _T) -> _T:
    """``method`` of an object store, observed: its latency, and its failures other than a missing object."""
    from pacs.errors import NotFound

    seconds, errors = OBJECT_STORE_SECONDS.labels(op), OBJECT_STORE_ERRORS.labels(op)

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        except NotFound:
            raise
        except Exception:
            errors.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - started)

    return cast(_T, call)
