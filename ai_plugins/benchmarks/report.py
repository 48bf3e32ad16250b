"""What comes out of evaluations: the leaderboard, the JSON report and the curve figure (PNG).

Only aggregate numbers leave here. Curves are drawn from aggregate points too, but an ROC or FROC
curve of a small test set, next to the per-case scores a vendor-hosted plugin computed itself,
would give its vendor the labels; so for vendors the curves of hosted plugins are left out
(``curves=False``) and only the metrics with their intervals remain.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from matplotlib.figure import Figure
from sqlalchemy import Engine

from ai_plugins.benchmarks.datasets import BenchmarkInfo, VersionInfo, get_benchmark, get_version
from ai_plugins.benchmarks.evaluation import EvaluationView, list_evaluations
from ai_plugins.benchmarks.labels import Task

LOWER_IS_BETTER = frozenset({"hd95"})
REPORT_SCHEMA = "cloudfilm-benchmark-report/1"


@dataclass(frozen=True, slots=True)
class LeaderboardRow:
    rank: int
    plugin: str
    plugin_name: str
    plugin_version: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_cases: int
    n_failed: int
    date: datetime | None
    evaluation_id: int
    cloudfilm_version: str


def leaderboard(engine: Engine, benchmark_id: int, version_number: int | None = None
                ) -> tuple[BenchmarkInfo, VersionInfo, list[LeaderboardRow]]:  # fmt: skip
    """One row per plugin@version (its newest finished evaluation) on one dataset version, best first."""
    bench = get_benchmark(engine, benchmark_id)
    version = get_version(engine, bench.id, version_number)
    newest: dict[str, EvaluationView] = {}
    for view in list_evaluations(engine, bench.id, version_id=version.id):  # newest first
        if view.status == "done" and view.main_metric == bench.main_metric:
            newest.setdefault(view.plugin, view)
    sign = 1.0 if bench.main_metric in LOWER_IS_BETTER else -1.0

    def order(v: EvaluationView) -> tuple[int, float, float, str]:
        missing = v.main_value is None
        return (int(missing), sign * (v.main_value or 0.0), sign * (v.ci_low or 0.0), v.plugin)

    rows = [LeaderboardRow(n, v.plugin, v.plugin_name, v.plugin_version, v.main_metric, v.main_value, v.ci_low,
                           v.ci_high, v.n_cases, v.n_failed, v.finished_at, v.id, v.cloudfilm_version)
            for n, v in enumerate(sorted(newest.values(), key=order), start=1)]  # fmt: skip
    return bench, version, rows


def _strip_curves(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_curves(v) for k, v in value.items() if k != "curve"}
    return value


def report(view: EvaluationView, *, curves: bool) -> dict[str, Any]:
    """The downloadable JSON report: what was evaluated (all pinned versions) and the aggregate metrics."""
    metrics = view.metrics if curves else _strip_curves(view.metrics)
    return {
        "schema": REPORT_SCHEMA,
        "evaluation": {
            "id": view.id, "status": view.status, "requested_by": view.requested_by,
            "created_at": view.created_at.isoformat(),
            "finished_at": view.finished_at.isoformat() if view.finished_at else None, "error": view.error or None,
        },
        "benchmark": {"id": view.benchmark_id, "name": view.benchmark_name, "task": view.task.value,
                      "dataset_version": view.version_number, "dataset_digest": view.version_digest},
        "plugin": {"name": view.plugin_name, "version": view.plugin_version, "source": view.plugin_source,
                   "sha256": view.plugin_digest or None},
        "cloudfilm_version": view.cloudfilm_version,
        "threshold": view.threshold,
        "bootstrap_seed": view.seed,
        "n_cases": view.n_cases,
        "n_failed": view.n_failed,
        "main_metric": {"name": view.main_metric, "value": view.main_value, "ci_low": view.ci_low,
                        "ci_high": view.ci_high},
        "metrics": metrics,
        "curves_included": curves,
    }  # fmt: skip


def curve_png(view: EvaluationView) -> bytes:
    """ROC (classification), FROC and ROC (detection) or the Dice interval (segmentation), as PNG."""
    fig = Figure(figsize=(6.4 if view.task is not Task.DETECTION else 10.0, 4.8), dpi=100)
    title = f"{view.plugin} on {view.benchmark_name} v{view.version_number}"
    result = view.metrics
    if view.task is Task.CLASSIFICATION:
        _roc(fig.add_subplot(1, 1, 1), result.get("classification", {}), "ROC")
    elif view.task is Task.DETECTION:
        _froc(fig.add_subplot(1, 2, 1), result.get("froc", {}))
        _roc(fig.add_subplot(1, 2, 2), result.get("study_level", {}), "Study-level ROC")
    else:
        ax = fig.add_subplot(1, 1, 1)
        dice = result.get("segmentation", {}).get("metrics", {}).get("dice", {})
        value = dice.get("value")
        if value is not None:
            low, high = dice.get("ci_low") or value, dice.get("ci_high") or value
            ax.bar([0], [value], yerr=[[value - low], [high - value]], capsize=8, color="#4f8ac9")
        ax.set_xticks([0], ["mean Dice"])
        ax.set_ylim(0, 1)
        ax.set_title("Dice (95 % CI)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _roc(ax: Any, block: dict[str, Any], name: str) -> None:
    points = block.get("curve") or []
    auc = block.get("metrics", {}).get("auc", {})
    if points:
        xs, ys = zip(*points, strict=True)
        label = "AUC"
        if auc.get("value") is not None:
            label = f"AUC {auc['value']:.3f}"
            if auc.get("ci_low") is not None:
                label += f" ({auc['ci_low']:.3f}–{auc['ci_high']:.3f})"
        ax.step(xs, ys, where="post", color="#4f8ac9", label=label)
        ax.legend(loc="lower right")
    ax.plot([0, 1], [0, 1], linestyle=":", color="#888888")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(name)


def _froc(ax: Any, block: dict[str, Any]) -> None:
    points = block.get("curve") or []
    if len(points) > 1:
        xs, ys = zip(*points, strict=True)
        ax.step(xs, ys, where="post", color="#c96f4f")
    at = block.get("sensitivity_at_fp_per_scan", {})
    rates = [float(r) for r in at]
    values = [at[r]["value"] for r in at]
    if rates and all(v is not None for v in values):
        ax.plot(rates, values, "o", color="#c96f4f", label="sensitivity at 0.5, 1, 2, 4 FP/scan")
        ax.legend(loc="lower right")
    ax.set_xscale("symlog", linthresh=0.5)
    ax.set_xlim(0, max([8.0, *[p[0] for p in points]]))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("lesion sensitivity")
    ax.set_title("FROC")
