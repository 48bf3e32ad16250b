"""The ``[routing]`` table: what a rule matches (calling AE from the File Meta Information, any DICOM
keyword of the indexed metadata, wildcards, lists, person names) and the configurations refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacs.dimse.store import archive_meta
from pacs.errors import SettingsError
from pacs.routing.dispatch import source_ae_title
from pacs.routing.rules import Candidate, Rule, matches
from pacs.settings import Settings, load_settings
from tests.factories import PATIENTS, make_ct_study, to_bytes

META = json.dumps({
    "00080060": {"vr": "CS", "Value": ["CT"]},
    "00081030": {"vr": "LO", "Value": ["CHEST W/O CONTRAST"]},
    "00180015": {"vr": "CS", "Value": ["CHEST"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Anna"}]},
    "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]},
})


def _rule(**match: str | list[str]) -> Rule:
    return Rule(name="r", to=["d"], match=match)


@pytest.mark.parametrize(("match", "expected"), [
    ({}, True),
    ({"Modality": "CT"}, True),
    ({"Modality": "ct"}, True),  # case-insensitive
    ({"Modality": "MR"}, False),
    ({"Modality": ["MR", "CT"]}, True),
    ({"StudyDescription": "CHEST*"}, True),
    ({"StudyDescription": "*HEAD*"}, False),
    ({"BodyPartExamined": "CHEST", "Modality": "CT"}, True),
    ({"BodyPartExamined": "CHEST", "Modality": "MR"}, False),  # every entry must hold
    ({"PatientName": "MÜLLER^*"}, True),
    ({"ImageType": "AXIAL"}, True),  # one of several values
    ({"AccessionNumber": "*"}, False),  # absent attribute: no value to match
    ({"calling_ae": "SCANNER?"}, True),
    ({"calling_ae": "OTHER"}, False),
])  # fmt: skip
def test_what_a_rule_matches(match: dict[str, str | list[str]], expected: bool) -> None:
    assert matches(_rule(**match), Candidate(META, "SCANNER1")) is expected


def test_calling_ae_comes_from_the_file_meta_the_listener_writes() -> None:
    ds = make_ct_study(PATIENTS[0], n_slices=1, rows=8, cols=8, seed=1)[0]
    stored = archive_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1", "CT_ROOM_2")
    assert source_ae_title(stored) == "CT_ROOM_2"
    assert source_ae_title(to_bytes(ds)) == ""  # STOW-RS and imports: none
    assert source_ae_title(b"not dicom" * 40) == ""
    assert source_ae_title(stored[:140]) == ""  # truncated


def _load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Settings:
    path = tmp_path / "cloudfilm.toml"
    path.write_text(text)
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(path))  # undone after the test
    return load_settings()


GOOD = """
[routing.destinations.pacs2]
kind = "dicom"
aet = "PACS2"
host = "10.0.0.5"
port = 104
tls = true

[routing.destinations.cloud]
kind = "dicomweb"
url = "https://cloud.example/dicomweb"
token = "t0k3n"
transfer_syntax = "1.2.840.10008.1.2.1"

[[routing.rules]]
name = "ct"
to = ["pacs2", "cloud"]
match = { Modality = "CT", calling_ae = "CT1" }

[[routing.rules]]
name = "research"
on = "stable"
to = ["cloud"]
deidentify = true
"""


def test_a_routing_table_in_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load(tmp_path, monkeypatch, GOOD)
    dests, rules = settings.routing_destinations, settings.routing_rules
    assert dests["pacs2"].label() == "PACS2@10.0.0.5:104" and dests["pacs2"].tls
    assert dests["cloud"].token is not None and dests["cloud"].token.get_secret_value() == "t0k3n"
    assert [(r.name, r.on, r.to, r.deidentify) for r in rules] == [
        ("ct", "arrival", ["pacs2", "cloud"], False), ("research", "stable", ["cloud"], True)]
    assert "t0k3n" not in repr(dests["cloud"])


@pytest.mark.parametrize(("text", "says"), [
    (GOOD.replace('to = ["cloud"]', 'to = ["nowhere"]'), "unknown destination 'nowhere'"),
    (GOOD.replace('name = "research"', 'name = "ct"'), "two routing rules are named 'ct'"),
    (GOOD.replace('Modality = "CT"', 'Modalty = "CT"'), "neither calling_ae nor a DICOM keyword"),
    (GOOD.replace('on = "stable"', 'on = "sometimes"'), "ROUTING_RULES"),
    (GOOD.replace('port = 104', ''), "needs aet, host and port"),
    (GOOD.replace('url = "https://cloud.example/dicomweb"', 'url = "ftp://x"'), "http(s)://"),
    (GOOD.replace('"1.2.840.10008.1.2.1"', '"1.2.840.10008.1.2.4.50"'), "Little Endian"),
    (GOOD.replace('kind = "dicom"', 'kind = "hl7"'), "ROUTING_DESTINATIONS"),
    (GOOD.replace('to = ["pacs2", "cloud"]', "to = []"), "ROUTING_RULES"),
])  # fmt: skip
def test_bad_routing_tables_are_refused_in_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        text: str, says: str) -> None:  # fmt: skip
    with pytest.raises(SettingsError, match="invalid setting") as info:
        _load(tmp_path, monkeypatch, text)
    assert says in str(info.value)
