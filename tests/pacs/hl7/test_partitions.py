"""HL7 in a partitioned archive (issue 17 item 5): ``[hl7.partitions]`` maps a sender's Sending Facility
(MSH-4) to its partition, an unmapped sender works in the default partition. Over a real MLLP socket,
with a study whose UIDs and accession number both partitions hold: an ORU^R01 is signed into the
sender's twin only, an ORM^O01 schedules the sender's order only, an ADT^A08 corrects the sender's
patient only; SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.hl7 import Hl7Listener
from pacs.hl7.report_sink import report_sink
from pacs.partitions import PartitionConfig
from pacs.query import Level, QueryRequest, run_query
from pacs.reports.service import list_versions
from pacs.retrieve import find_instances
from pacs.worklist import orders
from tests.conftest import ARCHIVE_BACKENDS, archive_settings
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.pacs.hl7.support import connected, msh, orm, oru, segment

NORTH_FACILITY = "NORTH_RIS"
ACCESSION = "TWIN77"
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


@pytest.fixture(params=ARCHIVE_BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Archive, int, str]]:
    """An archive with a north partition, the twin study stored in both, and its HL7 listener's port."""
    for base in archive_settings(str(request.param), tmp_path, request):
        settings = base.model_copy(update={
            "partitions": {"north": PartitionConfig(ae_titles=["NORTH"])}, "hl7_partitions": {NORTH_FACILITY: "north"},
            "hl7_port": 0, "hl7_host": "127.0.0.1"})
        with Archive.open(settings) as archive, contextlib.ExitStack() as stack:
            north = archive.partitions.by_slug("north")
            assert north is not None
            twin = make_ct_study(PATIENTS[0], n_slices=2, rows=16, cols=16, seed=7707)
            for into, name in ((archive.partitions.default, "Default^Twin"), (north, "North^Twin")):
                for ds in twin:
                    copied = copy.deepcopy(ds)
                    copied.AccessionNumber = ACCESSION
                    copied.PatientName = name
                    assert archive.ingest.store_bytes(to_bytes(copied), partition=into).ok
            listener = Hl7Listener(archive, report_sink=report_sink(archive))
            listener.start()
            stack.callback(listener.stop)
            yield archive, listener.port, str(twin[0].StudyInstanceUID)


def _from(facility: str, message: bytes) -> bytes:
    """``message`` as sent by ``facility`` (MSH-4)."""
    return message.replace(b"|RIS|HOSPITAL|", f"|RIS|{facility}|".encode(), 1)


def _a08(control_id: str, patient_id: str, name: str) -> bytes:
    return ("\r".join([msh("ADT^A08^ADT_A01", control_id), segment("EVN", {1: "A08"}),
                       segment("PID", {3: f"{patient_id}^^^", 5: name})]) + "\r").encode()


def _names(archive: Archive, partition: int, study_uid: str) -> list[str]:
    request = QueryRequest(Level.STUDY, {"StudyInstanceUID": study_uid}, return_keys=("PatientName",),
                           scope=AccessScope.everything(partition))
    return [str(m.get("PatientName")) for m in run_query(archive.engine, request)]


def _reports(archive: Archive, partition: int, study_uid: str) -> list[tuple[str, int | None, str]]:
    versions = list_versions(archive.engine, AccessScope.everything(partition), study_uid, latest_signed_only=False)
    return [(v.status, v.version, v.signer_name) for v in versions]


def _sr_count(archive: Archive, partition: int, study_uid: str) -> int:
    found = find_instances(archive.engine, AccessScope.everything(partition), study_uid=study_uid)
    return sum(1 for i in found if i.sop_class_uid.startswith(SR_PREFIX))


def test_messages_go_to_the_partition_their_sending_facility_is_mapped_to(site: tuple[Archive, int, str]) -> None:
    archive, port, study_uid = site
    north = archive.partitions.by_slug("north").id  # type: ignore[union-attr]
    default = archive.partitions.default.id
    with connected(port) as client:
        # a result for the accession both hospitals use: the mapped sender's twin gets it, the other none
        ack = client.send(_from(NORTH_FACILITY, oru("R1", accession=ACCESSION, patient_id=PATIENTS[0].patient_id,
                                                    author="9&North&Nora")))
        assert ack.code == "AA", ack.reason
        assert _reports(archive, north, study_uid) == [("signed", 1, "Nora North")]
        assert _reports(archive, default, study_uid) == []
        assert (_sr_count(archive, north, study_uid), _sr_count(archive, default, study_uid)) == (1, 0)
        # an unmapped sender (MSH-4 HOSPITAL) works in the default partition: its twin gets its own version 1
        ack = client.send(oru("R2", accession=ACCESSION, patient_id=PATIENTS[0].patient_id, author="8&Home&Hal"))
        assert ack.code == "AA", ack.reason
        assert _reports(archive, default, study_uid) == [("signed", 1, "Hal Home")]
        assert _reports(archive, north, study_uid) == [("signed", 1, "Nora North")]

        # an order from the north RIS is north's: the default worklist does not hold it
        assert client.send(_from(NORTH_FACILITY, orm("O1", "ACCN1"))).code == "AA"
        assert orders.get(archive.engine, "ACCN1", partition=north).source == "hl7"
        with pytest.raises(NotFound):
            orders.get(archive.engine, "ACCN1")
        # and a cancel from the default sender finds no such order in its partition (AE)
        cancel = client.send(orm("O2", "ACCN1", control="CA"))
        assert cancel.code == "AE" and "no worklist entry" in cancel.reason
        assert orders.get(archive.engine, "ACCN1", partition=north).status == "SCHEDULED"

        # a patient update from the north feed renames north's patient only
        ack = client.send(_from(NORTH_FACILITY, _a08("A1", PATIENTS[0].patient_id, "Renamed^North")))
        assert ack.code == "AA", ack.reason
    assert _names(archive, north, study_uid) == ["Renamed^North"]
    assert _names(archive, default, study_uid) == ["Default^Twin"]


def test_a_facility_mapped_to_no_partition_is_refused_at_start(tmp_path: Path) -> None:
    from pacs.errors import SettingsError
    from pacs.settings import load_settings

    with pytest.raises(SettingsError, match="which is no partition"):
        load_settings(data_dir=tmp_path, hl7_partitions={"X": "south"})
