"""The deployment gate: a plugin version is enabled for clinical studies only after it passed a benchmark.

``[plugins.gate] benchmark = "lesions", metric = "auc", min = 0.9`` (env ``CLOUDFILM_PLUGINS_GATE_*``):
enabling needs a completed evaluation of that exact version (for an algorithm package, of the
admitted file: same SHA-256) on that benchmark whose metric is at least ``min``. The best such
evaluation is the plugin's benchmark figures, which the clinical watch (:mod:`ai_plugins.review.watch`)
shows next to the physicians' review outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from ai_plugins.benchmarks import metrics as m
from ai_plugins.benchmarks.datasets import get_benchmark, list_benchmarks
from ai_plugins.benchmarks.evaluation import EvaluationView, list_evaluations
from ai_plugins.benchmarks.labels import Task
from ai_plugins.runner.registry import PluginSource, PluginView
from pacs.errors import Conflict, NotFound
from pacs.settings import Settings

__all__ = ["GatePolicy", "GateRefused", "GateResult", "check_gate", "evaluation_metric", "evaluation_ppv",
           "gate_result", "latest_figures"]  # fmt: skip


class GateRefused(Conflict):
    """Enabling a plugin version the deployment gate does not let through (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class GatePolicy:
    benchmark: str
    metric: str
    minimum: float

    @classmethod
    def of(cls, settings: Settings) -> GatePolicy | None:
        """The site's gate, or ``None`` when no benchmark is named."""
        if not settings.plugins_gate_benchmark:
            return None
        return cls(settings.plugins_gate_benchmark, settings.plugins_gate_metric, settings.plugins_gate_min)


@dataclass(frozen=True, slots=True)
class GateResult:
    """Whether a plugin version passes, why (one sentence), and the evaluation that decided it."""

    passed: bool
    reason: str
    evaluation: EvaluationView | None = None
    value: float | None = None


def evaluation_metric(view: EvaluationView, metric: str) -> float | None:
    """A metric's value from a done evaluation: its summary, else the task's own tables (``auc`` of a
    detection benchmark is its study-level AUC)."""
    summary = view.metrics.get("summary", {})
    found: Any = summary.get(metric)
    if found is None:
        if view.task is Task.CLASSIFICATION:
            found = view.metrics.get("classification", {}).get("metrics", {}).get(metric)
        elif view.task is Task.DETECTION:
            level = view.metrics.get("study_level", {}).get("metrics", {})
            found = level.get(metric.removeprefix("study_")) or summary.get(f"study_{metric}")
        else:
            found = view.metrics.get("segmentation", {}).get("metrics", {}).get(metric)
    if isinstance(found, dict):
        found = found.get("value")
    return None if found is None else float(found)


def evaluation_ppv(view: EvaluationView) -> dict[str, Any] | None:
    """The evaluation's PPV with its Wilson interval (from the study-level counts for evaluations scored
    before the finding-level PPV existed)."""
    stored = view.metrics.get("ppv")
    if isinstance(stored, dict):
        return stored
    table = view.metrics.get("classification") or view.metrics.get("study_level")
    if not isinstance(table, dict) or "confusion" not in table:
        return None
    tp, fp = int(table["confusion"]["tp"]), int(table["confusion"]["fp"])
    return m.Proportion("study", tp, tp + fp).to_json()


def _same_build(view: EvaluationView, plugin: PluginView) -> bool:
    if view.plugin_name != plugin.name or view.plugin_version != plugin.version:
        return False
    return plugin.source is not PluginSource.PACKAGE or view.plugin_digest == plugin.digest


def gate_result(engine: Engine, policy: GatePolicy, plugin: PluginView) -> GateResult:
    """Whether ``plugin`` may be enabled under ``policy``, with the reason."""
    try:
        bench = get_benchmark(engine, policy.benchmark)
    except NotFound:
        return GateResult(False, f"the deployment gate names the benchmark {policy.benchmark!r}, which does not "
                                 "exist; create it or change [plugins.gate] benchmark")  # fmt: skip
    done = [v for v in list_evaluations(engine, bench.id) if v.status == "done" and v.plugin_name == plugin.name
            and v.plugin_version == plugin.version]  # fmt: skip
    same = [v for v in done if _same_build(v, plugin)]
    if not same:
        if done:
            return GateResult(False, f"{plugin.key}'s evaluations on {bench.name} were of another package file; "
                                     f"evaluate the admitted one (sha256 {plugin.digest[:12]}…) first")  # fmt: skip
        return GateResult(False, f"{plugin.key} has no completed evaluation on {bench.name}; the deployment gate "
                                 f"requires {policy.metric} ≥ {policy.minimum:g} there "
                                 f"(cloudfilm benchmark evaluate {bench.name} {plugin.name})")  # fmt: skip
    scored = [(evaluation_metric(v, policy.metric), v) for v in same]
    valued = [(value, v) for value, v in scored if value is not None]
    if not valued:
        return GateResult(False, f"{bench.name}'s evaluations of {plugin.key} report no {policy.metric}; the "
                                 "deployment gate cannot compare them", same[0])  # fmt: skip
    value, best = max(valued, key=lambda pair: (pair[0], pair[1].id))
    if value < policy.minimum:
        return GateResult(False, f"{plugin.key} reached {policy.metric} {value:.4g} on {bench.name} (evaluation "
                                 f"{best.id}), below the deployment gate's minimum {policy.minimum:g}", best, value)
    return GateResult(True, f"{plugin.key} reached {policy.metric} {value:.4g} on {bench.name} (evaluation "
                            f"{best.id}; the gate asks for {policy.minimum:g})", best, value)  # fmt: skip


def check_gate(engine: Engine, settings: Settings, plugin: PluginView) -> GateResult | None:
    """Raise :class:`GateRefused` when the site has a gate and ``plugin`` does not pass it."""
    policy = GatePolicy.of(settings)
    if policy is None:
        return None
    result = gate_result(engine, policy, plugin)
    if not result.passed:
        raise GateRefused(f"{plugin.key} cannot be enabled for clinical studies: {result.reason}")
    return result


def latest_figures(engine: Engine, settings: Settings, plugin: PluginView) -> EvaluationView | None:
    """The benchmark figures to show beside a version's clinical use: the gate's deciding evaluation when
    the site has a gate, else its newest completed evaluation of this build on any benchmark."""
    policy = GatePolicy.of(settings)
    if policy is not None:
        result = gate_result(engine, policy, plugin)
        if result.evaluation is not None:
            return result.evaluation
    newest: EvaluationView | None = None
    for bench in list_benchmarks(engine):
        for view in list_evaluations(engine, bench.id):
            if view.status == "done" and _same_build(view, plugin) and (newest is None or view.id > newest.id):
                newest = view
    return newest
