"""C-STORE responses encoded directly are byte for byte what pynetdicom encodes."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from pacs.dimse.overrides.provider import ArchiveDIMSE
from pacs.dimse.overrides.responses import encode_store_response
from tests.factories import CT_IMAGE_STORAGE
from tests.pacs.dimse.support import Node


def _response(status: int, **fields: object) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = CT_IMAGE_STORAGE
    rsp.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1234567890123"  # odd length: padded
    rsp.Status = status
    for name, value in fields.items():
        setattr(rsp, name, value)
    return rsp


@pytest.mark.parametrize("rsp", [
    _response(0x0000),
    _response(0xA700, ErrorComment="the index database is unavailable"),
    _response(0xB006, ErrorComment="odd"),  # odd-length text: space padded
    _response(0xC000, ErrorComment=""),
    _response(0x0000, AffectedSOPInstanceUID="1.2.3.4"),
    _response(0x0000, AffectedSOPClassUID=None),
], ids=["success", "a700-comment", "odd-comment", "empty-comment", "even-uid", "no-class"])
def test_equal_to_pynetdicom(rsp: C_STORE) -> None:
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    assert encode_store_response(rsp) == encode(msg.command_set, True, True)


def test_offending_element_is_left_to_pynetdicom() -> None:
    assert encode_store_response(_response(0xA900, OffendingElement=[0x00100010])) is None


def test_accepted_associations_use_it(node: Node) -> None:
    from pynetdicom.sop_class import Verification

    from tests.pacs.dimse.support import context

    assoc = node.associate([context(Verification)])
    try:
        served = node.listener.ae.active_associations
        assert served and all(isinstance(a.dimse, ArchiveDIMSE) for a in served)
    finally:
        assoc.release()
