"""Benchmark errors: each is one sentence for the user (HTTP 400/429 through ``viewer_api``)."""

from __future__ import annotations

from collections.abc import Sequence

from pacs.errors import CloudfilmError

MAX_LISTED = 20


class InvalidBenchmarkData(CloudfilmError):
    """A benchmark definition, study list, label file or split request that cannot be accepted."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        if self.problems:
            listed = "; ".join(self.problems[:MAX_LISTED])
            more = len(self.problems) - MAX_LISTED
            message = f"{message}: {listed}" + (f"; and {more} more" if more > 0 else "")
        super().__init__(message)


class RateLimited(CloudfilmError):
    """Too many evaluations of one plugin on one benchmark in the last day."""
