"""Running the ``cloudfilm`` console script as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pacs.settings import Settings
from tests.net import free_port

CLOUDFILM = str(Path(sys.executable).with_name("cloudfilm"))


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    full_env["COLUMNS"] = "200"  # tables as wide as a terminal, whatever width pytest's runner has
    full_env.update(env or {})
    return subprocess.run([CLOUDFILM, *args], env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, input=input_text)


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``CLOUDFILM_*`` variables that give a ``cloudfilm`` subprocess the archive ``settings`` name."""
    env = {"CLOUDFILM_DATA_DIR": str(settings.data_dir)}
    for name in ("database_url", "storage_url", "s3_endpoint", "s3_access_key"):
        value = getattr(settings, name)
        if value:
            env[f"CLOUDFILM_{name.upper()}"] = str(value)
    if settings.s3_secret_key:
        env["CLOUDFILM_S3_SECRET_KEY"] = settings.s3_secret_key.get_secret_value()
    return env


def cli_env(**env: str) -> dict[str, str]:
    """This process's environment without any ``CLOUDFILM_`` setting, plus ``env``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")} | env


@contextmanager
def serving(data_dir: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 180,
            **settings: str) -> Iterator[tuple[str, Path]]:
    """``cloudfilm serve`` on free loopback ports until its start-up banner is printed; yields its URL
    and its log (stdout and stderr). ``env`` and ``settings`` are ``CLOUDFILM_*`` variables. Stopped
    with SIGTERM, killed if it does not stop."""
    port = free_port()
    # One serving process unless asked: these tests look at one process (tests/e2e/test_processes.py at several).
    env = cli_env(**{"CLOUDFILM_DATA_DIR": str(data_dir), "CLOUDFILM_DICOM_PORT": str(free_port()),
                     "CLOUDFILM_PROCESSES": "1", **(env or {}),
                     **settings, "CLOUDFILM_HTTP_PORT": str(port)})
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([CLOUDFILM, "serve"], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while "is ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
