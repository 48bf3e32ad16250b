"""Running one in-process plugin in a child process, with a timeout the parent enforces by killing it.

The child reads the study through the reader it is given (the archive's index and object store on a
worker of the archive, DICOMweb with the job's token on an edge worker), runs the plugin, turns the
findings into DICOM objects with the SR/SEG writers when asked to and sends them back; the parent
(the worker) stores them through the one ingest path. A plugin that crashes,
hangs or exhausts memory takes only its child down. Children come from a ``forkserver`` whose
imports are done once, so a job does not pay for importing numpy or torch. A child whose worker
dies (even by SIGKILL) sees its pipe close and exits at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import spawn
from multiprocessing.connection import Connection
from typing import Any

from ai_plugins.runner.results import ResultObject, ResultUids, build_result_objects
from ai_plugins.runner.source import StudyReader

log = logging.getLogger(__name__)

#: Imported once in the fork server, so that children start warm (``forkserver_main``: the worker's
#: main script, which each child would otherwise import again).
PRELOAD = ["ai_plugins.runner.child", "ai_plugins.runner.source", "ai_plugins.sdk", "ai_plugins.sr"]
_MAIN = "ai_plugins.runner.forkserver_main"  # last: the main script imports modules of the list
_preload_lock = threading.Lock()
_preloaded: set[str] = set()


@dataclass(frozen=True, slots=True)
class ChildTask:
    """Everything a child needs, pickled to it."""

    reader: StudyReader
    study_uid: str
    plugin_ref: str
    uids: ResultUids | None  # None: only the findings come back (benchmark cases store nothing)
    job_id: int


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """What came back: result objects and the findings JSON, or an error sentence (+ traceback)."""

    objects: tuple[ResultObject, ...] = ()
    findings_json: str = ""
    error: str = ""
    detail: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.error


def _context() -> Any:
    return multiprocessing.get_context("forkserver")


def preload(modules: Sequence[str]) -> None:
    """Ask the fork server to import ``modules`` (plugin packages) before it forks children.

    Only effective before the first child starts; later calls are harmless.
    """
    # Imported here, not at the top: in the fork server it imports the main script, which imports
    # this module, so it must come after this module is complete.
    from ai_plugins.runner.forkserver_main import MAIN_PATH_ENV

    with _preload_lock:
        main_path = spawn.get_preparation_data("preload").get("init_main_from_path")
        if main_path:  # read by ai_plugins.runner.forkserver_main in the fork server
            os.environ[MAIN_PATH_ENV] = str(main_path)
        _preloaded.update(PRELOAD)
        _preloaded.update(modules)
        _context().set_forkserver_preload([*sorted(_preloaded), _MAIN])


def _watch_parent(conn: Connection) -> None:
    """Exit the moment the worker's end of the pipe closes (the worker died or gave up on us)."""
    try:
        while True:
            conn.recv()  # the parent never sends; any message or EOF ends the child
            break
    except (EOFError, OSError):
        pass
    os._exit(70)


def child_main(task: ChildTask, conn: Connection) -> None:
    """The child's entry point."""
    threading.Thread(target=_watch_parent, args=(conn,), name="parent-watch", daemon=True).start()
    from ai_plugins.runner.registry import load_plugin_class
    from ai_plugins.sdk import Findings, StudyInput

    try:
        with task.reader.open(task.study_uid) as source:
            cls = load_plugin_class(task.plugin_ref)
            plugin = cls()
            study = StudyInput(task.study_uid, source)
            conn.send(("progress", 0.1, "running the plugin"))
            findings = plugin.run(study)
            if not isinstance(findings, Findings):
                raise TypeError(f"run() returned {type(findings).__name__}, not Findings")
            objects: list[ResultObject] = []
            if task.uids is not None:
                conn.send(("progress", 0.7, "writing results"))
                objects = list(build_result_objects(findings, study, cls.info(), task.uids))
        conn.send(("ok", findings.to_json(), objects))
    except BaseException as exc:  # the parent records it; nothing may escape silently
        conn.send(("error", f"{type(exc).__name__}: {exc}".strip(), traceback.format_exc(limit=20)))


def run_in_child(
    task: ChildTask,
    timeout_s: float,
    *,
    on_progress: Callable[[float, str], None] = lambda _p, _m: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ChildOutcome:
    """Run ``task`` in a fresh child; kill it on timeout or when ``should_stop`` turns true."""
    ctx = _context()
    parent_conn, child_conn = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=child_main, args=(task, child_conn), name=f"plugin-job-{task.job_id}", daemon=True)
    proc.start()
    child_conn.close()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ChildOutcome(error=f"the plugin timed out after {timeout_s:g} s", timed_out=True)
            if should_stop():
                return ChildOutcome(error="the worker stopped the plugin")
            if not parent_conn.poll(min(0.25, remaining)):
                continue
            try:
                message = parent_conn.recv()
            except (EOFError, OSError):
                proc.join(2)
                return ChildOutcome(error=f"the plugin process died (exit code {proc.exitcode})")
            if message[0] == "progress":
                on_progress(float(message[1]), str(message[2]))
                continue
            if message[0] == "ok":
                return ChildOutcome(objects=tuple(message[2]), findings_json=str(message[1]))
            return ChildOutcome(error=str(message[1]) or "the plugin failed", detail=str(message[2]))
    finally:
        parent_conn.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
