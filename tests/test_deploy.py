"""The deployment files: docker-compose.yml runs replicas behind HAProxy (deploy/haproxy/), which
balances HTTP and DICOM over the replicas that pass /readyz; checked with the real tools when they
are installed (``docker compose config``, ``haproxy -c``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
ENV = {"POSTGRES_PASSWORD": "p", "MINIO_ROOT_PASSWORD": "m" * 8, "CLOUDFILM_ADMIN_PASSWORD": "a",
       "CLOUDFILM_SECRET_KEY": "k" * 32}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def test_compose_runs_replicas_behind_haproxy_on_shared_engines() -> None:
    services = _compose()["services"]
    node, lb = services["cloudfilm"], services["haproxy"]
    assert str(node["deploy"]["replicas"]).startswith("${CLOUDFILM_REPLICAS")
    assert "ports" not in node  # replicas publish nothing: only the balancer does
    assert {p.split(":")[-2] if p.count(":") > 1 else p.split(":")[0] for p in lb["ports"]} >= {"8000", "11112"}
    mounted = {v.split(":")[0]: v.split(":")[1] for v in lb["volumes"]}
    assert mounted["./deploy/haproxy/haproxy.cfg"] == "/usr/local/etc/haproxy/haproxy.cfg"
    env = node["environment"]
    for shared in ("CLOUDFILM_DATABASE_URL", "CLOUDFILM_STORAGE_URL", "CLOUDFILM_SECRET_KEY"):
        assert shared in env, shared  # one index, one bucket, one key for every replica
    assert env["CLOUDFILM_DATABASE_URL"].startswith("postgresql") and env["CLOUDFILM_STORAGE_URL"].startswith("s3://")
    assert "?" in env["CLOUDFILM_SECRET_KEY"]  # required: compose refuses to start without it
    assert "/readyz" in " ".join(node["healthcheck"]["test"])
    assert services["worker"]["environment"]["CLOUDFILM_SECRET_KEY"] == env["CLOUDFILM_SECRET_KEY"]


def test_haproxy_balances_http_and_dicom_over_ready_replicas() -> None:
    text = HAPROXY_CFG.read_text()
    backends = dict(re.findall(r"^backend (\S+)\n(.*?)(?=^\S|\Z)", text, flags=re.M | re.S))
    assert set(backends) == {"cloudfilm_http", "cloudfilm_dicom"}
    assert "mode http" in backends["cloudfilm_http"] and "mode tcp" in backends["cloudfilm_dicom"]
    for body in backends.values():
        assert "http-check send meth GET uri /readyz" in body and "http-check expect status 200" in body
    assert "cloudfilm:8000 check" in backends["cloudfilm_http"]
    assert "cloudfilm:11112 check" in backends["cloudfilm_dicom"] and "port 8000" in backends["cloudfilm_dicom"]
    assert re.search(r"^\s+bind :8000$", text, re.M) and re.search(r"^\s+bind :11112$", text, re.M)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (Debian: haproxy)")
def test_haproxy_accepts_its_configuration() -> None:
    checked = subprocess.run(["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _compose_cli() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _compose_cli(), reason="docker compose is not installed")
def test_docker_compose_accepts_the_file() -> None:
    checked = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=REPO, capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin:/usr/local/bin", **ENV}, timeout=60)
    assert checked.returncode == 0, checked.stderr
