"""Imported once in the fork server (:func:`ai_plugins.runner.child.preload`): runs the worker's
main script there, so that each plugin child does not.

multiprocessing imports the parent's ``__main__`` script in every child it starts (as
``__mp_main__``, so functions defined there can be unpickled) unless the process it forks from
already holds it. ``set_forkserver_preload(["__main__"])`` is meant to import it once in the fork
server, but CPython 3.11's fork server never receives the script's path (it filters the
preparation data on a key, ``main_path``, that ``spawn.get_preparation_data`` does not produce), so
every child re-ran the ``cloudfilm`` console script's imports (Typer, FastAPI, every CLI module):
2.5-7 s per job on a busy 2-core machine, more than the plugin itself. The parent passes the path
in :data:`MAIN_PATH_ENV`; children then find ``__main__`` in place and skip it.
"""

from __future__ import annotations

import logging
import os
from multiprocessing import spawn

MAIN_PATH_ENV = "CLOUDFILM_FORKSERVER_MAIN"

_path = os.environ.pop(MAIN_PATH_ENV, "")
if _path:
    try:
        spawn.import_main_path(_path)
    except Exception:  # children import it themselves then, as before: slower, never broken
        logging.getLogger(__name__).exception("the fork server could not import %s", _path)
