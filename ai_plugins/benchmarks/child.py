"""Running an in-process plugin on one benchmark case in a child process (killed on timeout).

Like the runner's children (:mod:`ai_plugins.runner.child`, same fork server), but the child only
returns the findings: an evaluation scores them and stores nothing in the study.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from pacs.settings import Settings


@dataclass(frozen=True, slots=True)
class CaseTask:
    settings: Settings
    study_uid: str
    plugin_ref: str
    job_id: int


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    findings_json: str = ""
    error: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _watch_parent(conn: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        conn.recv()
    os._exit(70)


def case_main(task: CaseTask, conn: Connection) -> None:
    """The child: run the plugin on the study, send back its findings as JSON."""
    threading.Thread(target=_watch_parent, args=(conn,), name="parent-watch", daemon=True).start()
    from ai_plugins.runner.registry import load_plugin_class
    from ai_plugins.runner.source import ArchiveSource
    from ai_plugins.sdk import Findings, StudyInput
    from pacs.index import db
    from pacs.storage import open_store

    engine = db.make_engine(task.settings.resolved_database_url, pool_size=2)
    store = open_store(task.settings)
    try:
        plugin = load_plugin_class(task.plugin_ref)()
        findings = plugin.run(StudyInput(task.study_uid, ArchiveSource(engine, store, task.study_uid)))
        if not isinstance(findings, Findings):
            raise TypeError(f"run() returned {type(findings).__name__}, not Findings")
        conn.send(("ok", findings.to_json()))
    except BaseException as exc:  # the parent records it
        conn.send(("error", f"{type(exc).__name__}: {exc}".strip(), traceback.format_exc(limit=20)))
    finally:
        store.close()
        engine.dispose()


def run_case(task: CaseTask, timeout_s: float, should_stop: Callable[[], bool] = lambda: False) -> CaseOutcome:
    """Run ``task`` in a fresh child of the fork server; kill it on timeout or when told to stop."""
    ctx = multiprocessing.get_context("forkserver")
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=case_main, args=(task, child_conn), name=f"benchmark-case-{task.job_id}", daemon=True)
    proc.start()
    child_conn.close()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return CaseOutcome(error=f"the plugin timed out after {timeout_s:g} s")
            if should_stop():
                return CaseOutcome(error="the worker stopped the plugin")
            if not parent_conn.poll(min(0.25, remaining)):
                continue
            try:
                message = parent_conn.recv()
            except (EOFError, OSError):
                proc.join(2)
                return CaseOutcome(error=f"the plugin process died (exit code {proc.exitcode})")
            if message[0] == "ok":
                return CaseOutcome(findings_json=str(message[1]))
            return CaseOutcome(error=str(message[1]) or "the plugin failed", detail=str(message[2]))
    finally:
        parent_conn.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
