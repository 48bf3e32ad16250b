"""Routing across a crash: ``cloudfilm serve`` with a ``[routing]`` table in its TOML config is killed
(SIGKILL) while it forwards to a slow DICOM peer and started again: every instance arrives, and
the only repeats are instances that were in flight at the crash (at most one per running job)."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.ai_plugins.test_forward_jobs import refusing_peer
from tests.cli import cli_env
from tests.e2e.test_webhooks_restart import PASSWORD, _stow, _token, _wait, serve
from tests.net import free_port
from tests.pg import temporary_database

CONFIG = """
[routing.destinations.peer]
kind = "dicom"
aet = "DEST"
host = "127.0.0.1"
port = {port}
concurrency = 2
max_attempts = 1000
timeout = 10

[[routing.rules]]
name = "everything-ct"
match = {{ Modality = "CT" }}
to = ["peer"]
"""


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_forwarding_survives_a_crash_mid_forward(backend: str, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "cloudfilm.toml"
    config.write_text(CONFIG.format(port=port))
    env = cli_env(CLOUDFILM_CONFIG=str(config), CLOUDFILM_DATA_DIR=str(tmp_path / "data"),
                  CLOUDFILM_DICOM_ENABLED="false", CLOUDFILM_ADMIN_PASSWORD=PASSWORD, CLOUDFILM_WORKER_CONCURRENCY="2",
                  CLOUDFILM_JOB_POLL_INTERVAL="0.2", CLOUDFILM_JOB_LEASE="3", CLOUDFILM_JOB_RETRY_BACKOFF="0.5",
                  CLOUDFILM_JOB_RETRY_BACKOFF_MAX="2")  # fmt: skip
    with temporary_database() if backend == "postgres" else _nothing() as url:
        if url:
            env["CLOUDFILM_DATABASE_URL"] = url
        with refusing_peer(port, set(), delay_s=0.25) as stored:
            with serve(env, tmp_path / "serve-1.log") as (base, proc):
                auth = _token(base)
                _wait("the rule's cursor", lambda: _cursor(base, auth) is not None)
                for seed in (21, 22):
                    _stow(base, auth, seed, 8)
                _wait("the first forwards", lambda: len(stored) >= 3)
                os.killpg(proc.pid, signal.SIGKILL)  # a crash, mid-forward
                proc.wait()
            assert len(stored) < 16, "the crash came too late to test anything"
            with serve(env, tmp_path / "serve-2.log") as (base, _proc):
                auth = _token(base)
                _wait("every forward sent", lambda: _routing(base, auth)["sent"] == 16, timeout=180)
                state = _routing(base, auth)
        counts = Counter(stored)
        assert len(counts) == 16
        repeats = sum(n - 1 for n in counts.values())
        assert repeats <= 2, counts  # the instances in flight at the crash (concurrency 2)
        assert (state["pending"], state["dead"]) == (0, 0)


def _routing(base: str, auth: dict[str, str]) -> dict[str, object]:
    answer = httpx.get(f"{base}/api/routing", headers=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["destinations"][0])


def _cursor(base: str, auth: dict[str, str]) -> int | None:
    rules = httpx.get(f"{base}/api/routing", headers=auth, timeout=30).json()["rules"]
    return None if rules[0]["last_seq"] is None else int(rules[0]["last_seq"])


class _nothing:
    def __enter__(self) -> str:
        return ""

    def __exit__(self, *exc: object) -> None:
        return None
