"""C-STORE response encoding: pynetdicom's DIMSE provider vs the archive's (pacs.dimse.overrides.provider).

pynetdicom turns each response primitive into a DIMSE message through pydicom Datasets (and encodes
the command set twice: once for its group length); the archive writes the same bytes directly
(tests/pacs/dimse/test_responses.py checks they are equal). This times ``send_msg`` of a success
response, one per received instance, with the association and the DUL stubbed out, and prints the
median of ``--runs`` runs of ``--count`` responses:

    .venv/bin/python benchmarks/store_response_bench.py [--runs 7] [--count 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pynetdicom.dimse import DIMSEServiceProvider  # noqa: E402
from pynetdicom.dimse_primitives import C_STORE  # noqa: E402

from pacs.dimse.overrides.provider import ArchiveDIMSE  # noqa: E402


class _Peer:
    maximum_length = 1024 * 1024


class _Association:
    """What ``send_msg`` touches: the DUL, the peer's maximum PDU length, the EVT_DIMSE_SENT handlers."""

    is_acceptor, is_requestor = True, False
    requestor = acceptor = _Peer()

    class dul:  # noqa: N801
        @staticmethod
        def send_pdu(pdu: Any) -> None:
            pass

    @staticmethod
    def get_handlers(event: Any) -> list[Any]:
        return []


def _response() -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.12345678901234567890"
    rsp.Status = 0x0000
    return rsp


def per_response_us(provider_class: type[DIMSEServiceProvider], count: int) -> float:
    provider = provider_class.__new__(provider_class)
    provider._assoc = _Association()  # type: ignore[assignment]
    responses = [_response() for _ in range(count)]
    started = time.perf_counter()
    for rsp in responses:
        provider.send_msg(rsp, 1)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    results = {cls.__name__: statistics.median(per_response_us(cls, args.count) for _ in range(args.runs))
               for cls in (DIMSEServiceProvider, ArchiveDIMSE)}
    print(f"C-STORE success responses, median of {args.runs} runs of {args.count}\n")
    print("| provider | µs per response |\n|---|---:|")
    for name, us in results.items():
        print(f"| {name} | {us:.1f} |")
    stock, ours = results["DIMSEServiceProvider"], results["ArchiveDIMSE"]
    print(f"\nArchiveDIMSE is {stock / ours:.0f}x faster: {(stock - ours) * 200 / 1000:.0f} ms less CPU per "
          "200-instance study")


if __name__ == "__main__":
    main()
