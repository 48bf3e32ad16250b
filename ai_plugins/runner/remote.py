"""Calling a vendor-hosted plugin: one HTTP POST per job, answered with findings or stored UIDs.

The request (JSON)::

    {"job_id": 17, "study_instance_uid": "1.2…", "series_instance_uids": ["1.2…"],
     "dicomweb_url": "https://archive.example/dicomweb", "access_token": "…", "token_type": "Bearer",
     "expires_at": "2026-01-01T12:00:00+00:00", "plugin": {"name": "…", "version": "…"},
     "findings_schema_version": "1.0"}

The answer, within the manifest's timeout, is either findings in the SDK's schema
(:class:`ai_plugins.sdk.Findings`, ``{"schema_version": "1.0", …}``), which the archive writes as
SR/SEG, or ``{"stored_instances": ["<SOPInstanceUID>", …]}`` after the vendor STOWed its own objects
with the token. Anything else fails the attempt with a sentence naming what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx

from ai_plugins.runner.registry import PluginView
from ai_plugins.sdk import SCHEMA_VERSION, Findings, InvalidFindings
from pacs import __version__

MAX_ANSWER_BYTES = 256 * 1024 * 1024


class RemoteError(Exception):
    """The vendor's endpoint failed, timed out or answered something unusable (one sentence)."""


@dataclass(frozen=True, slots=True)
class RemoteAnswer:
    findings: Findings | None = None
    stored_instances: tuple[str, ...] = ()


def job_request(plugin: PluginView, *, job_id: int, study_uid: str, series_uids: Sequence[str], dicomweb_url: str,
                token: str, expires_at: datetime) -> dict[str, object]:  # fmt: skip
    return {
        "job_id": job_id,
        "study_instance_uid": study_uid,
        "series_instance_uids": list(series_uids),
        "dicomweb_url": dicomweb_url,
        "access_token": token,
        "token_type": "Bearer",
        "expires_at": expires_at.isoformat(),
        "plugin": {"name": plugin.name, "version": plugin.version},
        "findings_schema_version": SCHEMA_VERSION,
    }


def call_remote(plugin: PluginView, body: dict[str, object], *, timeout_s: float, idempotency_key: str) -> RemoteAnswer:
    """POST the job to the plugin's endpoint and interpret the answer."""
    headers = {"User-Agent": f"cloudfilm/{__version__}", "Idempotency-Key": idempotency_key,
               "Accept": "application/json"}  # fmt: skip
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False) as client:
            response = client.post(plugin.endpoint_url, json=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise RemoteError(f"the vendor endpoint did not answer within {timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise RemoteError(f"the vendor endpoint cannot be reached: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 300:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        raise RemoteError(f"the vendor endpoint answered HTTP {response.status_code}" + (f": {text}" if text else ""))
    if len(response.content) > MAX_ANSWER_BYTES:
        raise RemoteError("the vendor's answer is too large")
    try:
        data = json.loads(response.content)
    except ValueError as exc:
        raise RemoteError("the vendor's answer is not JSON") from exc
    if isinstance(data, dict) and "stored_instances" in data:
        stored = data["stored_instances"]
        if not isinstance(stored, list) or not stored or not all(isinstance(u, str) and u for u in stored):
            raise RemoteError("stored_instances must be a non-empty list of SOP Instance UIDs")
        return RemoteAnswer(stored_instances=tuple(stored))
    try:
        return RemoteAnswer(findings=Findings.from_json(response.content))
    except InvalidFindings as exc:
        raise RemoteError(str(exc)) from exc
