"""The deployment gate and the clinical watch (issue 15 item 6), on SQLite and PostgreSQL.

Evaluations are written as the scorer leaves them (status ``done``, metrics JSON with the PPV's
Wilson interval), reviews as the review service leaves them: the gate refuses to enable a version
without a passing evaluation of that exact build (API 409, CLI exit 1, each with the reason), and the
watch raises its alert (log line, gauge, page flag) once enough reviewed findings are accepted less
often than the benchmark PPV's lower bound.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, update

from ai_plugins.benchmarks import metrics as m
from ai_plugins.benchmarks.gate import GateRefused
from ai_plugins.benchmarks.models import BenchmarkRow, BenchmarkVersionRow, EvaluationRow
from ai_plugins.review.models import AiReview
from ai_plugins.runner.models import PluginRecord
from ai_plugins.runner.service import PluginService
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.settings import Settings
from tests.viewer_api.portal.conftest import bearer
from viewer_api.app import create_app

GATE = {"plugins_gate_benchmark": "lesions", "plugins_gate_metric": "auc", "plugins_gate_min": 0.9,
        "plugins_watch_window_days": 28.0, "plugins_watch_min_reviews": 10}  # fmt: skip


def _gated(settings: Settings) -> Settings:
    return settings.model_copy(update=GATE)


def _plugin(archive: Archive, name: str, version: str, *, digest: str = "") -> None:
    now = utcnow()
    with archive.engine.begin() as conn:
        conn.execute(insert(PluginRecord).values(
            name=name, version=version, source="package" if digest else "remote", package_digest=digest,
            endpoint_url="" if digest else "https://vendor.invalid/run", enabled=False, registered_by="acme",
            created_at=now, updated_at=now))  # fmt: skip


def _evaluation(archive: Archive, name: str, version: str, *, auc: float, tp: int, called: int,
                digest: str = "", status: str = "done") -> int:  # fmt: skip
    now = utcnow()
    ppv = m.Proportion("finding", tp, called).to_json()
    metrics: dict[str, Any] = {"task": "detection", "ppv": ppv,
                               "study_level": {"metrics": {"auc": {"value": auc, "ci_low": None, "ci_high": None}}},
                               "summary": {"froc_mean_sensitivity": {"value": 0.8}}}  # fmt: skip
    with archive.engine.begin() as conn:
        bench = conn.execute(BenchmarkRow.__table__.select().where(BenchmarkRow.name == "lesions")).first()
        if bench is None:
            bench_id = conn.execute(insert(BenchmarkRow).values(
                name="lesions", task="detection", created_at=now, updated_at=now).returning(BenchmarkRow.id)
            ).scalar_one()  # fmt: skip
            conn.execute(insert(BenchmarkVersionRow).values(benchmark_fk=bench_id, number=1, digest="d" * 64,
                                                            created_at=now))  # fmt: skip
        else:
            bench_id = bench.id
        version_id = conn.execute(BenchmarkVersionRow.__table__.select().where(
            BenchmarkVersionRow.benchmark_fk == bench_id)).first().id  # fmt: skip
        return int(conn.execute(insert(EvaluationRow).values(
            benchmark_fk=bench_id, version_fk=version_id, plugin_name=name, plugin_version=version,
            plugin_source="package" if digest else "remote", cloudfilm_version="test", plugin_digest=digest,
            status=status, n_cases=40, main_metric="froc_mean_sensitivity", metrics_json=json.dumps(metrics),
            created_at=now, finished_at=now).returning(EvaluationRow.id)).scalar_one())  # fmt: skip


def _reviews(archive: Archive, name: str, version: str, decisions: dict[str, int], *, days_ago: float = 1) -> None:
    when = utcnow() - timedelta(days=days_ago)
    with archive.engine.begin() as conn:
        n = 0
        for decision, count in decisions.items():
            for _ in range(count):
                n += 1
                uid = f"{days_ago}-{decision}-{n}"
                conn.execute(insert(AiReview).values(
                    study_uid="1.2.3", report_uid=f"1.2.3.{abs(hash(uid)) % 10**9}", finding_key=f"Lesion {n}",
                    plugin_name=name, plugin_version=version, decision=decision, label="Nodule", changes_json="{}",
                    reviewer="doc", review_sr_uid=f"1.2.9.{abs(hash(uid)) % 10**12}", created_at=when))  # fmt: skip


def test_wilson_interval_matches_the_textbook() -> None:
    low, high = m.wilson_interval(8, 10)  # Agresti & Coull (1998): 0.490 - 0.943
    assert (round(low or 0, 3), round(high or 0, 3)) == (0.490, 0.943)
    assert m.wilson_interval(0, 0) == (None, None)
    assert m.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_finding_ppv_counts_called_findings_within_a_lesion() -> None:
    lesion = m.Lesion((0.0, 0.0, 0.0), 10.0)
    cases = [m.DetectionCase((lesion,), ((1.0, 0.0, 0.0, 0.9), (50.0, 0.0, 0.0, 0.8), (2.0, 0.0, 0.0, 0.2))),
             m.DetectionCase((), ((5.0, 5.0, 5.0, 0.7),))]  # fmt: skip
    assert m.finding_ppv(cases, 0.5) == m.Proportion("finding", 1, 3)


def test_enabling_needs_a_passing_evaluation_of_that_build(settings: Settings) -> None:
    with Archive.open(_gated(settings)) as archive:
        service = PluginService(archive, use_entry_points=False)
        _plugin(archive, "acme-detector", "1.0", digest="a" * 64)
        with pytest.raises(GateRefused, match="names the benchmark 'lesions', which does not exist"):
            service.set_enabled("acme-detector", "1.0", True)
        _evaluation(archive, "other-detector", "1.0", auc=0.99, tp=1, called=1)
        with pytest.raises(GateRefused, match="no completed evaluation on lesions"):
            service.set_enabled("acme-detector", "1.0", True)
        _evaluation(archive, "acme-detector", "1.0", auc=0.97, tp=30, called=32, digest="b" * 64)
        with pytest.raises(GateRefused, match="another package file"):
            service.set_enabled("acme-detector", "1.0", True)
        _evaluation(archive, "acme-detector", "1.0", auc=0.85, tp=30, called=32, digest="a" * 64)
        _evaluation(archive, "acme-detector", "1.0", auc=0.99, tp=30, called=32, digest="a" * 64, status="running")
        with pytest.raises(GateRefused, match=r"auc 0\.85 on lesions .* below the deployment gate's minimum 0\.9"):
            service.set_enabled("acme-detector", "1.0", True)
        assert not service.registry.get("acme-detector", "1.0").enabled
        passing = _evaluation(archive, "acme-detector", "1.0", auc=0.93, tp=30, called=32, digest="a" * 64)
        assert service.set_enabled("acme-detector", "1.0", True).enabled
        assert service.set_enabled("acme-detector", "1.0", False).enabled is False  # disabling is never gated
        with archive.engine.begin() as conn:
            conn.execute(update(EvaluationRow).where(EvaluationRow.id == passing).values(status="failed"))
        with pytest.raises(GateRefused):
            service.set_enabled("acme-detector", "1.0", True)
    with Archive.open(settings) as archive:  # no gate configured: enabling is the admin's decision alone
        assert PluginService(archive, use_entry_points=False).set_enabled("acme-detector", "1.0", True).enabled


def test_api_and_page_refuse_and_watch(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with Archive.open(_gated(settings)) as archive:
        create_user(archive.engine, "admin", "pw-0123456789", "admin")
        _plugin(archive, "acme-detector", "2.0")
        _evaluation(archive, "other-detector", "1.0", auc=0.99, tp=1, called=1)
        client = TestClient(create_app(archive))
        client.headers["Authorization"] = f"Bearer {bearer(client, 'admin', 'pw-0123456789')}"
        refused = client.patch("/api/plugins/acme-detector/2.0", json={"enabled": True})
        assert refused.status_code == 409
        assert "no completed evaluation on lesions" in refused.text
        evaluation = _evaluation(archive, "acme-detector", "2.0", auc=0.95, tp=45, called=50)  # PPV 0.9 (0.79-0.96)
        assert client.patch("/api/plugins/acme-detector/2.0", json={"enabled": True}).json()["enabled"] is True

        _reviews(archive, "acme-detector", "2.0", {"accepted": 4, "edited": 1, "rejected": 1})
        watch = client.get("/api/plugins/acme-detector/2.0/watch").json()
        assert watch["benchmark"]["evaluation_id"] == evaluation and watch["benchmark"]["value"] == 0.95
        assert watch["benchmark"]["ppv"] == 0.9 and 0.78 < watch["benchmark"]["ppv_ci_low"] < 0.79
        assert (watch["window_reviews"]["reviewed"], watch["alert"]) == (6, False)  # too few reviews to judge
        assert "the alert needs 10" in watch["alert_reason"]

        _reviews(archive, "acme-detector", "2.0", {"rejected": 6}, days_ago=40)  # outside the window
        _reviews(archive, "acme-detector", "2.0", {"accepted": 2, "rejected": 4}, days_ago=2)
        with caplog.at_level(logging.WARNING, logger="ai_plugins.review.watch"):
            watch = client.get("/api/plugins/acme-detector/2.0/watch").json()
            client.get("/api/plugins/watch")  # the same state again: no second log line
        assert watch["reviews"] == {"plugin": "acme-detector", "version": "2.0", "accepted": 6, "rejected": 11,
                                    "edited": 1, "reviewed": 18}  # fmt: skip
        assert watch["window_reviews"]["reviewed"] == 12 and watch["acceptance_rate"] == pytest.approx(7 / 12)
        assert watch["alert"] is True and "below the lower bound 78." in watch["alert_reason"]
        alerts = [r for r in caplog.records if "plugin watch alert" in r.getMessage()]
        assert len(alerts) == 1 and "acme-detector@2.0" in alerts[0].getMessage()

        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        samples = {s.name: s.value for s in families["cloudfilm_plugin_acceptance_alert"].samples
                   if s.labels == {"plugin": "acme-detector", "version": "2.0"}}  # fmt: skip
        assert samples == {"cloudfilm_plugin_acceptance_alert": 1.0}
        page = client.get("/viewer/plugins")
        assert page.status_code == 200
        assert 'data-plugin="acme-detector@2.0" class="alert" data-alert="1"' in page.text
        assert "below benchmark PPV" in page.text


def test_cli_enable_is_refused_with_the_reason(local_archive: Archive) -> None:
    from tests.cli import run_cli, settings_env

    _plugin(local_archive, "acme-detector", "3.0")
    _evaluation(local_archive, "acme-detector", "3.0", auc=0.8, tp=1, called=2)
    env = {**settings_env(local_archive.settings), "CLOUDFILM_PLUGINS_GATE_BENCHMARK": "lesions",
           "CLOUDFILM_PLUGINS_GATE_MIN": "0.9"}  # fmt: skip
    done = run_cli("plugins", "enable", "acme-detector", "3.0", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "reached auc 0.8 on lesions" in done.stdout + done.stderr
    assert "below the deployment gate's minimum 0.9" in done.stdout + done.stderr
    env["CLOUDFILM_PLUGINS_GATE_MIN"] = "0.75"
    done = run_cli("plugins", "enable", "acme-detector", "3.0", env=env)
    assert done.returncode == 0 and "acme-detector@3.0 enabled" in done.stdout, done.stdout + done.stderr
