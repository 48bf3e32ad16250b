"""The modality worklist (issue 17 item 6): scheduled orders modalities pick up by C-FIND, and the
performed procedure steps (MPPS) they report back.

:mod:`~pacs.worklist.models` (tables), :mod:`~pacs.worklist.orders` (create, update, cancel, list:
the one service the HL7 ORM/OMI feed, the admin API and the DIMSE adapters call),
:mod:`~pacs.worklist.matching` (the C-FIND matching keys as SQL conditions) and
:mod:`~pacs.worklist.performed` (MPPS N-CREATE/N-SET recorded on the order).
"""
