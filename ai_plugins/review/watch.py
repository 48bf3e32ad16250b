"""Watching a plugin version in clinical use: physicians' review outcomes and its finding rate per week,
next to its benchmark figures, and an alert when the acceptance rate falls under what the benchmark promised.

The acceptance rate is (accepted + edited) / reviewed over the current decisions on findings reviewed
in the last ``PLUGINS_WATCH_WINDOW_DAYS`` (an edited finding was real, only adjusted). The alert fires
when at least ``PLUGINS_WATCH_MIN_REVIEWS`` findings were reviewed in the window and the rate is below
the lower bound of the benchmark PPV's 95 % Wilson interval (:func:`ai_plugins.benchmarks.gate.evaluation_ppv`):
the share of its findings physicians accept is then lower than the benchmark says it can be. It is a
log line (once per change), the gauge ``cloudfilm_plugin_acceptance_alert`` and a flag on
``/viewer/plugins``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from ai_plugins.benchmarks.gate import GatePolicy, evaluation_metric, evaluation_ppv, latest_figures
from ai_plugins.review.models import AiReview
from ai_plugins.review.service import ReviewCounts, plugin_review_counts
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.registry import PluginRegistry, PluginView
from pacs import metrics
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.index.models import Instance
from pacs.jobs import aware
from pacs.settings import Settings

__all__ = ["BenchmarkFigures", "PluginWatch", "WatchCollector", "WeekRate", "watch_all", "watch_plugin"]

log = logging.getLogger(__name__)
RATE_WEEKS = 12  # weeks of finding rates shown

_alerting: dict[str, bool] = {}
_alerting_lock = threading.Lock()


class WeekRate(BaseModel):
    """One ISO week of clinical runs: studies analysed, studies with a finding, findings."""

    week: str  # "2026-W49"
    studies: int
    flagged: int
    findings: int
    rate: float | None  # flagged / studies


class BenchmarkFigures(BaseModel):
    """The evaluation shown beside clinical use: its gate metric and its PPV with the Wilson interval."""

    benchmark: str
    evaluation_id: int
    dataset_version: int
    metric: str
    value: float | None
    ppv: float | None
    ppv_ci_low: float | None
    ppv_ci_high: float | None
    ppv_level: str | None  # "finding" | "study"


class PluginWatch(BaseModel):
    plugin: str
    version: str
    enabled: bool
    package_sha256: str | None
    reviews: ReviewCounts  # every current decision on the version's findings
    window_days: float
    window_reviews: ReviewCounts  # current decisions made in the window
    acceptance_rate: float | None
    benchmark: BenchmarkFigures | None
    finding_rate: list[WeekRate]
    alert: bool
    alert_reason: str


def _window_counts(engine: Engine, name: str, version: str, since: datetime) -> ReviewCounts:
    newest = (select(func.max(AiReview.id)).where(AiReview.plugin_name == name, AiReview.plugin_version == version)
              .group_by(AiReview.report_uid, AiReview.finding_key))  # fmt: skip
    with engine.connect() as conn:
        rows = conn.execute(select(AiReview.decision, func.count()).where(
            AiReview.id.in_(newest), AiReview.created_at >= since).group_by(AiReview.decision)).all()  # fmt: skip
    counts = {str(k): int(v) for k, v in rows}
    values = {k: counts.get(k, 0) for k in ("accepted", "rejected", "edited")}
    return ReviewCounts(plugin=name, version=version, reviewed=sum(values.values()), **values)


def finding_rates(engine: Engine, name: str, version: str, *, now: datetime, weeks: int = RATE_WEEKS) -> list[WeekRate]:
    """Per ISO week (oldest first) of the stored SRs of clinical runs: studies, studies with a finding, findings."""
    since = now - timedelta(weeks=weeks)
    with engine.connect() as conn:
        rows = conn.execute(
            select(PluginResult.study_uid, PluginResult.summary_json, PluginResult.created_at)
            .join(Instance, Instance.sop_uid == PluginResult.sop_uid)
            .where(PluginResult.plugin_name == name, PluginResult.plugin_version == version,
                   PluginResult.kind == "SR", PluginResult.created_at >= since)
        ).all()  # fmt: skip
    weeks_seen: dict[str, tuple[set[str], set[str], int]] = {}
    for study_uid, text, created in rows:
        year, week, _ = aware(created).isocalendar()
        studies, flagged, findings = weeks_seen.setdefault(f"{year}-W{week:02d}", (set(), set(), 0))
        n = int(json.loads(text or "{}").get("findings") or 0)
        studies.add(study_uid)
        if n:
            flagged.add(study_uid)
        weeks_seen[f"{year}-W{week:02d}"] = (studies, flagged, findings + n)
    return [WeekRate(week=k, studies=len(s), flagged=len(f), findings=n, rate=len(f) / len(s) if s else None)
            for k, (s, f, n) in sorted(weeks_seen.items())]  # fmt: skip


def _figures(engine: Engine, settings: Settings, plugin: PluginView) -> BenchmarkFigures | None:
    view = latest_figures(engine, settings, plugin)
    if view is None:
        return None
    policy = GatePolicy.of(settings)
    metric = policy.metric if policy is not None else view.main_metric
    ppv = evaluation_ppv(view) or {}
    return BenchmarkFigures(
        benchmark=view.benchmark_name, evaluation_id=view.id, dataset_version=view.version_number, metric=metric,
        value=evaluation_metric(view, metric), ppv=ppv.get("value"), ppv_ci_low=ppv.get("ci_low"),
        ppv_ci_high=ppv.get("ci_high"), ppv_level=ppv.get("level"),
    )  # fmt: skip


def watch_plugin(engine: Engine, settings: Settings, plugin: PluginView, *, now: datetime | None = None) \
        -> PluginWatch:  # fmt: skip
    """The watch of one plugin version (logs a line when its alert starts or stops)."""
    now = now or utcnow()
    days = settings.plugins_watch_window_days
    window = _window_counts(engine, plugin.name, plugin.version, now - timedelta(days=days))
    accepted = window.accepted + window.edited
    rate = accepted / window.reviewed if window.reviewed else None
    figures = _figures(engine, settings, plugin)
    low = figures.ppv_ci_low if figures is not None else None
    alert, reason = False, ""
    if rate is not None and low is not None and figures is not None:
        if window.reviewed < settings.plugins_watch_min_reviews:
            reason = (f"{window.reviewed} finding(s) reviewed in the last {days:g} days; the alert needs "
                      f"{settings.plugins_watch_min_reviews}")  # fmt: skip
        elif rate < low:
            alert = True
            reason = (f"{plugin.key}: physicians accepted {rate:.1%} of {window.reviewed} findings reviewed in the "
                      f"last {days:g} days, below the lower bound {low:.1%} of its benchmark PPV on "
                      f"{figures.benchmark} (evaluation {figures.evaluation_id})")  # fmt: skip
    _note(plugin.key, alert, reason)
    return PluginWatch(
        plugin=plugin.name, version=plugin.version, enabled=plugin.enabled, package_sha256=plugin.digest or None,
        reviews=plugin_review_counts(engine, plugin.name, plugin.version), window_days=days, window_reviews=window,
        acceptance_rate=rate, benchmark=figures, finding_rate=finding_rates(engine, plugin.name, plugin.version,
                                                                           now=now),
        alert=alert, alert_reason=reason,
    )  # fmt: skip


def _note(key: str, alert: bool, reason: str) -> None:
    with _alerting_lock:
        before = _alerting.get(key, False)
        _alerting[key] = alert
    if alert and not before:
        log.warning("plugin watch alert: %s", reason)
    elif before and not alert:
        log.info("plugin watch: %s is no longer below its benchmark PPV", key)


def in_clinical_use(engine: Engine, plugins: Sequence[PluginView]) -> list[PluginView]:
    """The versions enabled for clinical studies, and those physicians have reviewed findings of."""
    with engine.connect() as conn:
        reviewed = {
            (str(n), str(v)) for n, v in conn.execute(select(AiReview.plugin_name, AiReview.plugin_version).distinct())
        }
    return [p for p in plugins if p.enabled or (p.name, p.version) in reviewed]


def watch_all(engine: Engine, settings: Settings, registry: PluginRegistry) -> list[PluginWatch]:
    return [watch_plugin(engine, settings, p) for p in in_clinical_use(engine, registry.list_all())]


class WatchCollector(Collector):
    """``cloudfilm_plugin_acceptance_rate``, ``…_benchmark_ppv_low``, ``…_reviews_window`` and
    ``cloudfilm_plugin_acceptance_alert`` per plugin version in clinical use."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive
        self._registry = PluginRegistry(archive.engine, use_entry_points=False)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["plugin", "version"]
        rate = GaugeMetricFamily(
            "cloudfilm_plugin_acceptance_rate",
            "Share of a plugin version's findings physicians accepted or edited, over the watch window",
            labels=labels,
        )
        low = GaugeMetricFamily(
            "cloudfilm_plugin_benchmark_ppv_low",
            "Lower bound of the 95 % Wilson interval of the plugin version's benchmark PPV",
            labels=labels,
        )
        reviewed = GaugeMetricFamily(
            "cloudfilm_plugin_reviews_window",
            "Findings of the plugin version reviewed in the watch window",
            labels=labels,
        )
        alert = GaugeMetricFamily(
            "cloudfilm_plugin_acceptance_alert",
            "1 while the acceptance rate is below the benchmark PPV's lower bound (enough reviews in the window)",
            labels=labels,
        )
        try:
            watched = watch_all(self._archive.engine, self._archive.settings, self._registry)
        except SQLAlchemyError:
            metrics.DATABASE_ERRORS.inc()
            watched = []
        for w in watched:
            key = [w.plugin, w.version]
            if w.acceptance_rate is not None:
                rate.add_metric(key, w.acceptance_rate)
            if w.benchmark is not None and w.benchmark.ppv_ci_low is not None:
                low.add_metric(key, w.benchmark.ppv_ci_low)
            reviewed.add_metric(key, w.window_reviews.reviewed)
            alert.add_metric(key, 1.0 if w.alert else 0.0)
        yield from (rate, low, reviewed, alert)
