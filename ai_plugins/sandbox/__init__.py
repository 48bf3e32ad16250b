"""The one way vendor code executes: an admitted package, in bubblewrap, on one case, with limits."""

from ai_plugins.sandbox.limits import Limits
from ai_plugins.sandbox.run import PackageEnv, SandboxOutcome, SandboxUnavailable, run_sandboxed, unavailable

__all__ = ["Limits", "PackageEnv", "SandboxOutcome", "SandboxUnavailable", "run_sandboxed", "unavailable"]
