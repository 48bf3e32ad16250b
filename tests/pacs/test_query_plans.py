"""The typical QIDO/C-FIND queries are answered through indexes, not table scans.

The index is bulk-loaded with synthetic rows (the benchmark ``benchmarks/index_scale_bench.py``
does the same at 1,000,000 instances and prints timings).
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from benchmarks.bulkload import bulk_load
from pacs.index.db import make_engine, upgrade
from pacs.query import Level, QueryRequest, compile_query


@pytest.fixture(scope="module")
def big_index(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('plans') / 'index.sqlite3'}")
    upgrade(engine)
    bulk_load(engine, studies=3000, instances_per_study=4)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return engine


def _plan(engine: Engine, request: QueryRequest) -> str:
    stmt, _, _ = compile_query(request, "sqlite")
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return "; ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({"PatientName": "mül*"}, "ix_studies_patient_name_norm"),
        ({"PatientName": "Doe^John"}, "ix_studies_patient_name_norm"),
        ({"StudyDate": "20200101-20200131"}, "ix_studies_study_date"),
        ({"PatientID": "PID0000042"}, "ix_studies_patient_id"),
        ({"AccessionNumber": "ACC00001234"}, "ix_studies_accession"),
        ({"StudyInstanceUID": "1.2.826.0.1.3680043.10.1.7"}, "sqlite_autoindex_studies_1"),
    ],
)
def test_study_queries_search_an_index(big_index: Engine, filters: dict[str, str], index: str) -> None:
    plan = _plan(big_index, QueryRequest(Level.STUDY, filters, limit=100))
    assert f"SEARCH studies USING INDEX {index}" in plan, plan


def test_unfiltered_study_list_walks_the_date_index(big_index: Engine) -> None:
    plan = _plan(big_index, QueryRequest(Level.STUDY, {}, limit=100))
    assert "USING INDEX ix_studies_study_date" in plan and "TEMP B-TREE" not in plan, plan


def test_modality_filter_uses_the_series_modality_index(big_index: Engine) -> None:
    plan = _plan(big_index, QueryRequest(Level.STUDY, {"ModalitiesInStudy": "MR"}, limit=100))
    assert "USING INDEX ix_series_modality" in plan, plan


def test_series_and_instances_of_a_study_are_index_searches(big_index: Engine) -> None:
    uid = "1.2.826.0.1.3680043.10.1.7"
    series = _plan(big_index, QueryRequest(Level.SERIES, {"StudyInstanceUID": uid}))
    instances = _plan(big_index, QueryRequest(Level.IMAGE, {"StudyInstanceUID": uid}))
    assert "SEARCH series USING INDEX ix_series_study_fk" in series, series
    assert "SEARCH instances USING INDEX ix_instances_study_fk" in instances, instances
    assert "SCAN" not in series + instances
