"""Benchmark tables (migration ``0004``): benchmarks, their immutable dataset versions and cases,
de-identified copies of studies, evaluations and their per-case predictions.

A dataset version is a frozen list of cases (study, label, split); every change writes a new
version with all its cases, so an evaluation pinned to a version is reproducible for good.
``benchmark_cases`` with ``split = 'test'`` are what the access layer hides from vendors and
patients (:mod:`ai_plugins.benchmarks.visibility`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId


class BenchmarkRow(Base):
    __tablename__ = "benchmarks"
    __table_args__ = (
        Index("ix_benchmarks_partition", "partition_fk", "name"),
        UniqueConstraint("partition_fk", "name", name="uq_benchmarks_partition_name"),  # 0021
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    task: Mapped[str] = mapped_column(String(16))  # classification | detection | segmentation
    description: Mapped[str] = mapped_column(Text, default="")
    label_schema_json: Mapped[str] = mapped_column(Text, default="{}")
    metrics_json: Mapped[str] = mapped_column(Text, default="[]")  # reported metrics, the main one first
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BenchmarkVersionRow(Base):
    __tablename__ = "benchmark_versions"
    __table_args__ = (
        UniqueConstraint("benchmark_fk", "number", name="uq_benchmark_versions_number"),
        Index("ix_benchmark_versions_digest", "benchmark_fk", "digest"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    benchmark_fk: Mapped[int] = mapped_column(ForeignKey("benchmarks.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the sorted case list with labels and splits
    change: Mapped[str] = mapped_column(String(256), default="")
    split_seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    test_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_cases: Mapped[int] = mapped_column(Integer, default=0)
    n_labelled: Mapped[int] = mapped_column(Integer, default=0)
    n_dev: Mapped[int] = mapped_column(Integer, default=0)
    n_test: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BenchmarkCaseRow(Base):
    __tablename__ = "benchmark_cases"
    __table_args__ = (
        UniqueConstraint("version_fk", "study_uid", name="uq_benchmark_cases_study"),
        Index("ix_benchmark_cases_split", "split", "study_uid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version_fk: Mapped[int] = mapped_column(ForeignKey("benchmark_versions.id", ondelete="CASCADE"))
    study_uid: Mapped[str] = mapped_column(String(64))
    label_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # NULL: not labelled yet
    split: Mapped[str] = mapped_column(String(8), default="")  # "" | dev | test
    stratum: Mapped[str] = mapped_column(String(64), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    age_band: Mapped[str] = mapped_column(String(16), default="")
    manufacturer: Mapped[str] = mapped_column(String(64), default="")


class BenchmarkCopyRow(Base):
    """A de-identified copy of a study in the archive: the dev split as vendors see it, or a test
    case as a vendor-hosted plugin reads it during an evaluation."""

    __tablename__ = "benchmark_copies"
    __table_args__ = (UniqueConstraint("benchmark_fk", "purpose", "source_study_uid", name="uq_benchmark_copies"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    benchmark_fk: Mapped[int] = mapped_column(ForeignKey("benchmarks.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(8))  # dev | eval
    source_study_uid: Mapped[str] = mapped_column(String(64))
    copy_study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    n_instances: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EvaluationRow(Base):
    __tablename__ = "benchmark_evaluations"
    __table_args__ = (
        Index("ix_benchmark_evaluations_rate", "benchmark_fk", "plugin_name", "created_at"),
        Index("ix_benchmark_evaluations_version", "version_fk", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    benchmark_fk: Mapped[int] = mapped_column(ForeignKey("benchmarks.id", ondelete="CASCADE"))
    version_fk: Mapped[int] = mapped_column(ForeignKey("benchmark_versions.id", ondelete="CASCADE"))
    plugin_name: Mapped[str] = mapped_column(String(64))
    plugin_version: Mapped[str] = mapped_column(String(64))
    plugin_source: Mapped[str] = mapped_column(String(16))
    cloudfilm_version: Mapped[str] = mapped_column(String(32))
    plugin_digest: Mapped[str] = mapped_column(String(64), default="", server_default="")  # packages (0006)
    threshold: Mapped[float] = mapped_column(Float, default=0.5)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | done | failed
    n_cases: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    main_metric: Mapped[str] = mapped_column(String(32), default="")
    main_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PredictionRow(Base):
    """What a plugin answered on one test case of an evaluation (admins only ever see these)."""

    __tablename__ = "benchmark_predictions"
    __table_args__ = (
        UniqueConstraint("evaluation_fk", "case_fk", name="uq_benchmark_predictions_case"),
        Index("ix_benchmark_predictions_status", "evaluation_fk", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    evaluation_fk: Mapped[int] = mapped_column(ForeignKey("benchmark_evaluations.id", ondelete="CASCADE"))
    case_fk: Mapped[int] = mapped_column(ForeignKey("benchmark_cases.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | ok | failed
    output_json: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
