"""What one sandboxed run may use: memory, CPU time, wall time, scratch space, processes, answer size."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """Resource limits of one run; a package's manifest declares them and the archive caps them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_mb: int = Field(default=4096, ge=256, le=262_144, description="address space (RLIMIT_AS)")
    cpu_s: int = Field(default=600, ge=1, le=86_400, description="CPU seconds per process (RLIMIT_CPU)")
    wall_s: float = Field(default=900.0, gt=0, le=6 * 3600.0, description="wall time of the whole run")
    scratch_mb: int = Field(default=1024, ge=1, le=65_536, description="the writable /scratch (tmpfs size)")
    max_processes: int = Field(default=64, ge=4, le=4096, description="processes and threads at once")
    max_answer_mb: int = Field(default=256, ge=1, le=4096, description="the findings JSON read back")

    def capped(self, ceiling: Limits) -> Limits:
        """These limits, none above ``ceiling``'s (the site's maximum)."""
        return Limits(memory_mb=min(self.memory_mb, ceiling.memory_mb), cpu_s=min(self.cpu_s, ceiling.cpu_s),
                      wall_s=min(self.wall_s, ceiling.wall_s), scratch_mb=min(self.scratch_mb, ceiling.scratch_mb),
                      max_processes=min(self.max_processes, ceiling.max_processes),
                      max_answer_mb=min(self.max_answer_mb, ceiling.max_answer_mb))  # fmt: skip
