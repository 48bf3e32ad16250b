"""DICOM peers see what a physician sees: the clinical studies, never the de-identified benchmark copies."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from pydicom.dataset import Dataset

from ai_plugins.benchmarks.service import BenchmarkService
from ai_plugins.benchmarks.visibility import clinical_system_scope
from pacs.archive import Archive
from pacs.dimse import DicomListener
from pacs.dimse.contexts import STUDY_ROOT_FIND, STUDY_ROOT_GET
from pacs.query import Level, QueryRequest, run_query
from tests.ai_plugins.benchmarks.conftest import bench_settings, split_benchmark, store_cases
from tests.factories import CtCase
from tests.pacs.dimse.support import Node, context, dicom_settings


def _find_studies(node: Node) -> set[str]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    assoc = node.associate([context(STUDY_ROOT_FIND)])
    try:
        return {str(ds.StudyInstanceUID) for rsp, ds in assoc.send_c_find(query, STUDY_ROOT_FIND)
                if rsp.Status == 0xFF00 and ds is not None}
    finally:
        assoc.release()


def _get_count(node: Node, study_uid: str) -> int:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    assoc = node.associate([context(STUDY_ROOT_GET)])
    try:
        responses = list(assoc.send_c_get(query, STUDY_ROOT_GET))
    finally:
        assoc.release()
    final = responses[-1][0]
    # No storage context was offered for the sub-operations: each match is a failed sub-operation
    # (0xA702 when all fail), so the counts say how many instances the identifier resolved to.
    assert final.Status in (0x0000, 0xA702), f"0x{final.Status:04X}"
    return int(final.get("NumberOfCompletedSuboperations", 0)) + int(final.get("NumberOfFailedSuboperations", 0))


def test_dicom_peers_never_find_nor_retrieve_benchmark_copies(tmp_path: Path, small_cases: list[CtCase]) -> None:
    settings = dicom_settings(bench_settings(tmp_path))
    with Archive.open(settings) as archive:
        store_cases(archive, small_cases)
        service = BenchmarkService(archive, use_entry_points=False)
        _, cases = service.cases(split_benchmark(service, small_cases, seed=1))
        test_case = next(c.study_uid for c in cases if c.split == "test")
        every = {str(m.get("StudyInstanceUID")) for m in run_query(archive.engine, QueryRequest(Level.STUDY))}
        copies = every - {c.study_uid for c in small_cases}
        assert len(copies) == 6  # the dev split, de-identified for vendors

        listener = DicomListener(archive, scope=partial(clinical_system_scope, archive.engine))
        listener.start()
        try:
            node = Node(archive, listener, settings)
            found = _find_studies(node)
            assert found == {c.study_uid for c in small_cases}  # test cases included, as for physicians
            assert _get_count(node, next(iter(copies))) == 0  # a copy does not exist for a peer
            assert _get_count(node, test_case) == 12  # a clinical study retrieves whole (12 slices)
        finally:
            listener.stop()
