"""HL7 test helpers: messages built field by field, and an MLLP client over a real socket."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

START, END = b"\x0b", b"\x1c\x0d"


def segment(name: str, fields: Mapping[int, str]) -> str:
    """``name|f1|f2…`` with the given 1-based fields (MSH: field 1 is the separator, so start at 2)."""
    first = 2 if name == "MSH" else 1
    top = max(fields) if fields else first - 1
    values = [fields.get(i, "") for i in range(first, top + 1)]
    return "|".join([name, *values])


def msh(message_type: str, control_id: str, *, version: str = "2.5", charset: str = "UNICODE UTF-8") -> str:
    return segment("MSH", {2: "^~\\&", 3: "RIS", 4: "HOSPITAL", 5: "CLOUDFILM", 6: "PACS", 7: "20260301120000",
                           9: message_type, 10: control_id, 11: "P", 12: version, 18: charset})


def oru(control_id: str, *, accession: str = "", study_uid: str = "", patient_id: str = "P100",
        lines: tuple[str, ...] = ("Findings: no acute disease.", "Impression: normal chest."),
        author: str = "1234&House&Gregory", observer: str = "", observed: str = "20260301113000",
        status: str = "F") -> bytes:
    segments = [msh("ORU^R01", control_id), segment("PID", {3: f"{patient_id}^^^HOSP", 5: "Doe^Jane", 7: "19700101",
                                                           8: "F"}),
                segment("OBR", {1: "1", 2: "PL1", 3: accession, 4: "71020^CHEST XRAY^L", 7: observed, 25: status,
                                32: author})]
    for i, line in enumerate(lines, 1):
        segments.append(segment("OBX", {1: str(i), 2: "TX", 3: "GDT^Report", 5: line, 11: "F", 16: observer}))
    if study_uid:
        segments.append(segment("OBX", {1: str(len(lines) + 1), 2: "ST", 3: "110180^Study Instance UID^DCM",
                                        5: study_uid, 11: "F"}))
    return ("\r".join(segments) + "\r").encode()


def orm(control_id: str, accession: str, *, control: str = "NW", patient_id: str = "P200",
        name: str = "Müller^Jürgen", station: str = "CT01", modality: str = "CT", start: str = "20260302093000",
        study_uid: str = "", procedure: str = "CT HEAD") -> bytes:
    segments = [msh("ORM^O01", control_id, version="2.3"),
                segment("PID", {3: f"{patient_id}^^^HOSP", 5: name, 7: "19650412", 8: "M"}),
                segment("ORC", {1: control, 2: f"PL-{accession}", 3: f"FL-{accession}", 7: f"^^^{start}"}),
                segment("OBR", {1: "1", 2: f"PL-{accession}", 3: f"FL-{accession}", 4: f"CTH^{procedure}^L",
                                16: "77^Referrer^Rita", 18: accession, 19: f"RP{accession}"[:16],
                                20: f"SPS{accession}"[:16], 21: station, 24: modality})]
    if study_uid:
        segments.append(segment("ZDS", {1: f"{study_uid}^100^Application^DICOM"}))
    return ("\r".join(segments) + "\r").encode()


@dataclass(frozen=True)
class Ack:
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8")

    def field(self, segment_id: str, number: int) -> str:
        for seg in self.text.split("\r"):
            parts = seg.split("|")
            if parts[0] == segment_id:
                index = number - 1 if segment_id == "MSH" else number
                return parts[index] if index < len(parts) else ""
        return ""

    @property
    def code(self) -> str:
        return self.field("MSA", 1)

    @property
    def reason(self) -> str:
        return self.field("MSA", 3)


class MllpClient:
    """A sender on a real TCP connection, reading one framed ACK per message."""

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_ack(self) -> Ack:
        while END not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the listener closed the connection")
            self._buffer += chunk
        framed, self._buffer = self._buffer.split(END, 1)
        assert framed.startswith(START), framed[:20]
        return Ack(framed[1:])

    def send(self, message: bytes) -> Ack:
        self.send_raw(START + message + END)
        return self.read_ack()

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def connected(port: int) -> Iterator[MllpClient]:
    client = MllpClient(port)
    try:
        yield client
    finally:
        client.close()
