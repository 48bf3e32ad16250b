"""Running the ``cloudfilm`` console script as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLOUDFILM = str(Path(sys.executable).with_name("cloudfilm"))


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    return subprocess.run([CLOUDFILM, *args], env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
