"""Plugin children start from the fork server without importing the worker's main script again
(the ``cloudfilm`` console script, or any script that runs a worker): the fork server imports it
once. Before, every child re-ran it, 2.5-6 s per job on a busy machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MAIN = """
import sys
import time
from pathlib import Path

sys.path.insert(0, {repo!r})
from ai_plugins.runner import child

if __name__ == "__mp_main__":  # multiprocessing importing this script outside the parent
    with open({log!r}, "a") as fh:
        fh.write("imported\\n")

if __name__ == "__main__":
    child.preload([])
    ctx = child._context()
    for _ in range(3):
        proc = ctx.Process(target=time.sleep, args=(0,))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0, proc.exitcode
"""


def test_children_do_not_import_the_main_script_again(tmp_path: Path) -> None:
    log = tmp_path / "imports.log"
    script = tmp_path / "worker_main.py"
    script.write_text(MAIN.format(repo=str(REPO), log=str(log)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == ["imported"]  # in the fork server, once; not in the 3 children
