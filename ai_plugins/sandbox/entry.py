"""The program that runs inside the sandbox: load the package's plugin, run it on the one case, print
its findings JSON.

It is executed by the package environment's Python with ``-I`` (no environment variables, no user
site, no script directory on the path) and imports only the standard library and, once the path is
set from its arguments, :mod:`ai_plugins.sdk` and the package. Everything the plugin writes to
standard output goes to standard error: the saved standard output carries one JSON line,
``{"ok": true, "findings": …}`` or ``{"ok": false, "error": "…"}``, and nothing else.

Usage: ``python -I entry.py PLUGIN_REF CASE_DIR PATH [PATH …]``.
"""

import json
import os
import sys
import traceback


def main(argv: list[str]) -> int:
    plugin_ref, case_dir, paths = argv[1], argv[2], argv[3:]
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the plugin's prints go to the log, never into the answer
    sys.stdout = sys.stderr
    sys.path[:0] = paths
    try:
        import importlib

        from ai_plugins.sdk import Findings, Plugin, StudyInput

        module_name, _, qualname = plugin_ref.partition(":")
        cls = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise TypeError(f"{plugin_ref} is not a cloudfilm Plugin class")
        names = sorted(n for n in os.listdir(case_dir) if n.endswith(".dcm"))
        blobs = []
        for name in names:
            with open(os.path.join(case_dir, name), "rb") as fh:
                blobs.append(fh.read())
        findings = cls().run(StudyInput.from_part10(blobs))
        if not isinstance(findings, Findings):
            raise TypeError(f"run() returned {type(findings).__name__}, not Findings")
        reply = {"ok": True, "findings": json.loads(findings.to_json())}
    except BaseException as exc:  # reported to the archive as one sentence; the traceback goes to the log
        traceback.print_exc(limit=20)
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()[:2000]}
    answer.write(json.dumps(reply))
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
