"""``cloudfilm retention plan|run`` and ``cloudfilm studies hold`` as a user runs them, with the rules
in the TOML config's ``[retention]`` table (or the equivalent JSON environment variables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs.archive import Archive
from pacs.settings import CONFIG_ENV, Settings, load_settings
from tests.cli import run_cli
from tests.factories import PATIENTS, make_ct_study
from tests.pacs.retention.conftest import store

CONFIG = """\
[retention]
run_at = "03:30"

[retention.tiers.cold]
url = "file://{cold}"

[[retention.rules]]
name = "old-ct"
action = "delete"
age_days = 365
modalities = ["CT"]
grace_days = 7

[[retention.rules]]
name = "old-mr-cold"
action = "tier"
tier = "cold"
age_days = 365
"""


def test_plan_run_and_holds_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cloudfilm.toml"
    config.write_text(CONFIG.format(cold=tmp_path / "cold"))
    monkeypatch.setenv(CONFIG_ENV, str(config))  # as --config does, undone after the test
    settings = load_settings(data_dir=tmp_path / "data")
    assert settings.retention_run_at == "03:30" and [r.name for r in settings.retention_rules] == ["old-ct",
                                                                                                   "old-mr-cold"]
    study = make_ct_study(PATIENTS[0], n_slices=1, rows=8, cols=8, seed=160, study_date="20150301")
    with Archive.open(settings) as archive:
        store(archive, study)
    uid = study[0].StudyInstanceUID
    cli = ("--config", str(config), "--data-dir", str(tmp_path / "data"))

    planned = run_cli(*cli, "retention", "plan")
    assert planned.returncode == 0, planned.stderr
    assert f"mark       {uid}  20150301  [old-ct]  deleted after" in planned.stdout
    assert planned.stdout.strip().endswith("1 mark")

    held = run_cli(*cli, "studies", "hold", uid, "--reason", "case 17")
    assert held.returncode == 0 and f"{uid} held since" in held.stdout
    assert "protected  " in run_cli(*cli, "retention", "plan").stdout
    assert run_cli(*cli, "retention", "run").stdout.strip() == "nothing done"
    assert uid in run_cli(*cli, "studies", "holds").stdout

    assert run_cli(*cli, "studies", "hold", uid, "--clear").returncode == 0
    again = run_cli(*cli, "studies", "hold", uid, "--clear")
    assert again.returncode == 1 and "not under a legal hold" in again.stderr
    assert run_cli(*cli, "retention", "run").stdout.strip() == "1 mark"
    assert "wait       " in run_cli(*cli, "retention", "plan").stdout


def test_rules_and_tiers_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOUDFILM_RETENTION_TIERS", f'{{"cold": {{"url": "file://{tmp_path}"}}}}')
    monkeypatch.setenv("CLOUDFILM_RETENTION_RULES",
                       '[{"name": "r", "action": "tier", "tier": "cold", "idle_days": 90}]')
    monkeypatch.setenv("CLOUDFILM_RETENTION_RUN_AT", "01:15")
    settings = Settings()
    assert settings.retention_run_at == "01:15" and settings.retention_rules[0].idle_days == 90
    monkeypatch.setenv("CLOUDFILM_RETENTION_RUN_AT", "25:00")
    with pytest.raises(ValueError, match="HH:MM"):
        Settings()
