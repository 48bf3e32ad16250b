"""The benchmark tests' lesion studies serve the package tests too."""

from tests.ai_plugins.benchmarks.conftest import small_cases

__all__ = ["small_cases"]
