"""HL7 v2 messages in and acknowledgements out, on the ``hl7`` library (python-hl7).

:func:`parse_message` decodes a framed message's bytes (MSH-18 names the character set; UTF-8
otherwise, Latin-1 when that fails) into an :class:`Inbound` with typed header fields, or raises
:class:`Refusal`. :func:`build_ack` answers with the original-mode ACK of HL7 v2.5 2.9.2: MSA-1
``AA``/``AE``/``AR``, MSA-3 and ERR carrying the reason (ERR-3 an HL7 table 0357 code, ERR-8 the
sentence), in the message's own delimiters and character set.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from enum import IntEnum, StrEnum

import hl7
from hl7.exceptions import HL7Exception


class AckCode(StrEnum):
    ACCEPT = "AA"
    ERROR = "AE"  # the message was fine; the archive could not act on it (unknown study, index down)
    REJECT = "AR"  # the message itself is refused (malformed, unsupported type)


class ErrorCode(IntEnum):
    """HL7 table 0357 (message error condition codes)."""

    SEGMENT_SEQUENCE = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT_CODE = 201
    UNKNOWN_KEY = 204
    INTERNAL_ERROR = 207


class Refusal(Exception):
    """A message answered with AE or AR: ``str()`` is the sentence the sender reads in MSA-3/ERR-8."""

    def __init__(self, ack: AckCode, code: ErrorCode, reason: str, location: str = "") -> None:
        super().__init__(reason)
        self.ack = ack
        self.code = code
        self.reason = reason
        self.location = location  # ERR-2: SEGMENT^sequence^field, when one field is to blame


def rejected(code: ErrorCode, reason: str, location: str = "") -> Refusal:
    return Refusal(AckCode.REJECT, code, reason, location)


def failed(code: ErrorCode, reason: str, location: str = "") -> Refusal:
    return Refusal(AckCode.ERROR, code, reason, location)


_CHARSETS = {"UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "8859/1": "latin-1", "8859/15": "iso8859-15",
             "ASCII": "utf-8", "": "utf-8"}


@dataclass(frozen=True)
class Inbound:
    """One received message, parsed, with the header fields every handler needs."""

    message: hl7.Message
    message_type: str  # MSH-9.1, e.g. ORU
    trigger: str  # MSH-9.2, e.g. R01
    control_id: str  # MSH-10
    encoding: str  # the Python codec its bytes were decoded with (the ACK is encoded alike)

    def field(self, path: str) -> str:
        """The unescaped value at ``path`` (``OBR.F18.R1.C1``) of the first such segment, "" if absent."""
        return field_of(self.message, path)

    def segments(self, segment_id: str) -> list[hl7.Segment]:
        try:
            return list(self.message.segments(segment_id))
        except KeyError:
            return []


def field_of(message: hl7.Message, path: str) -> str:
    try:
        value = message[path]
    except (KeyError, IndexError, ValueError, HL7Exception):
        return ""
    return message.unescape(str(value)).strip() if value else ""


def segment_field(message: hl7.Message, segment: hl7.Segment, field: int, component: int = 1,
                  repetition: int = 1, subcomponent: int = 1) -> str:
    """One component of one field of ``segment`` (1-based, as HL7 numbers them), unescaped."""
    try:
        value = segment.extract_field(1, field, repetition, component, subcomponent)
    except (IndexError, ValueError, HL7Exception):
        return ""
    return message.unescape(str(value)).strip() if value else ""


def _charset(raw: bytes) -> str:
    first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if len(first) < 4:
        return "utf-8"
    fields = first.split(first[3:4])
    name = fields[17].decode("ascii", "replace").split(first[4:5].decode("ascii", "replace") or "^")[0].strip() \
        if len(fields) > 17 else ""  # MSH-18 (the first field is the separator itself)
    return _CHARSETS.get(name.upper(), "utf-8")


def decode(raw: bytes) -> tuple[str, str]:
    """The text of a message and the codec used, with segments separated by CR alone."""
    codec = _charset(raw)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        codec = "latin-1"
        text = raw.decode(codec)
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 \t"), codec


def parse_message(raw: bytes) -> Inbound:
    """Parse ``raw``; :class:`Refusal` (AR) when it is not an HL7 v2 message with a usable header."""
    text, codec = decode(raw)
    if not text.startswith("MSH") or len(text) < 8:
        raise rejected(ErrorCode.SEGMENT_SEQUENCE, "the message does not start with an MSH segment")
    try:
        message = hl7.parse(text)
    except (HL7Exception, ValueError, IndexError) as exc:
        raise rejected(ErrorCode.SEGMENT_SEQUENCE, f"the message cannot be parsed: {exc}") from exc
    message_type = field_of(message, "MSH.F9.R1.C1").upper()
    trigger = field_of(message, "MSH.F9.R1.C2").upper()
    control_id = field_of(message, "MSH.F10")
    inbound = Inbound(message, message_type, trigger, control_id, codec)
    if not message_type:
        raise rejected(ErrorCode.REQUIRED_FIELD_MISSING, "MSH-9 (message type) is empty", "MSH^1^9")
    if not control_id:
        raise rejected(ErrorCode.REQUIRED_FIELD_MISSING, "MSH-10 (message control ID) is empty", "MSH^1^10")
    for segment in message:
        sid = str(segment[0][0]) if segment and segment[0] else ""
        if len(sid) != 3 or not sid.isalnum():
            raise rejected(ErrorCode.SEGMENT_SEQUENCE, f"a segment has no valid segment ID ({sid[:10]!r})")
    return inbound


_counter = itertools.count(1)


def _control_id() -> str:
    return f"CF{int(time.time() * 1000) % 10**13:013d}{os.getpid() % 1000:03d}{next(_counter) % 10000:04d}"


def _escape(text: str) -> str:
    """A sentence made safe for one HL7 field in the default delimiters (HL7 v2.5 2.7.4)."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
    return out.replace("~", "\\R\\").replace("\r", " ").replace("\n", " ")


def build_ack(inbound: Inbound | None, ack: AckCode, refusal: Refusal | None = None, *,
              application: str = "CLOUDFILM", raw: bytes = b"") -> bytes:
    """The ACK of ``inbound`` (or, when it could not be parsed, of what ``raw``'s first segment says)."""
    header = _header(inbound, raw)
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    msh = ["MSH", "^~\\&", header["receiver_app"] or application, header["receiver_facility"],
           header["sender_app"], header["sender_facility"], now, "",
           f"ACK^{header['trigger']}^ACK" if header["trigger"] else "ACK", _control_id(),
           header["processing"] or "P", header["version"] or "2.5"]
    if header["charset"]:
        msh += ["", "", "", "", "", header["charset"]]
    reason = refusal.reason[:200] if refusal is not None else ""
    segments = ["|".join(msh), "|".join(["MSA", ack.value, _escape(header["control_id"]), _escape(reason[:80])])]
    if refusal is not None:
        segments.append("|".join(["ERR", "", _escape(refusal.location).replace("\\S\\", "^"),
                                  f"{int(refusal.code)}^{_escape(refusal.code.name.replace('_', ' ').title())}^HL70357",
                                  "E", "", "", "", _escape(reason)]))
    codec = inbound.encoding if inbound is not None else "utf-8"
    return ("\r".join(segments) + "\r").encode(codec, "replace")


def _header(inbound: Inbound | None, raw: bytes) -> dict[str, str]:
    """Who sent the message and what it was, for the ACK (in the default delimiters, escaped)."""
    names = ("sender_app", "sender_facility", "receiver_app", "receiver_facility", "control_id", "processing",
             "version", "trigger", "charset")
    if inbound is not None:
        m = inbound.message
        values = [field_of(m, "MSH.F3.R1.C1"), field_of(m, "MSH.F4.R1.C1"), field_of(m, "MSH.F5.R1.C1"),
                  field_of(m, "MSH.F6.R1.C1"), inbound.control_id, field_of(m, "MSH.F11.R1.C1"),
                  field_of(m, "MSH.F12.R1.C1"), inbound.trigger, field_of(m, "MSH.F18.R1.C1")]
        return {n: (v if n == "control_id" else _escape(v)) for n, v in zip(names, values, strict=True)}
    # Unparsed: the fields of a first segment that at least looks like MSH, split by its own separator.
    text = raw.decode("latin-1").replace("\n", "\r").split("\r", 1)[0]
    fields = text.split(text[3]) if text.startswith("MSH") and len(text) > 3 else []
    component = fields[1][:1] if len(fields) > 1 and fields[1] else "^"

    def get(i: int) -> str:
        return _escape(fields[i - 1].split(component)[0][:64]) if len(fields) >= i else ""

    # MSH-n is fields[n-1]: the separator itself is MSH-1 and is not among the split fields.
    trigger = fields[8].split(component)[1][:3] if len(fields) > 8 and component in fields[8] else ""
    return {"sender_app": get(3), "sender_facility": get(4), "receiver_app": get(5), "receiver_facility": get(6),
            "control_id": fields[9][:64] if len(fields) > 9 else "", "processing": get(11), "version": get(12),
            "trigger": _escape(trigger), "charset": ""}
