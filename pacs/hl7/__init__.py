"""HL7 v2 over MLLP (issues 13 and 17): results and orders from a RIS.

:mod:`~pacs.hl7.mllp` (framing, the TCP server), :mod:`~pacs.hl7.messages` (parsing with the
``hl7`` library, ACKs), :mod:`~pacs.hl7.results` (ORU^R01 → :class:`ExternalReport`, matched to a
study, stored by a :class:`ReportSink`), :mod:`~pacs.hl7.orders` (ORM^O01 / OMI^O23 → worklist),
:mod:`~pacs.hl7.handler` (one message → its ACK) and :mod:`~pacs.hl7.listener` (the service
``cloudfilm serve`` runs when ``[hl7] port`` is set).
"""

from pacs.hl7.listener import Hl7Listener
from pacs.hl7.results import ExternalReport, MatchedStudy, ReportAuthor, ReportSink

__all__ = ["ExternalReport", "Hl7Listener", "MatchedStudy", "ReportAuthor", "ReportSink"]
