"""Prometheus metrics of the archive (exposed by viewer_api at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
