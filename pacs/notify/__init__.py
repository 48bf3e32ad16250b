"""Telling patients (issue 13): an e-mail (or a text message through an SMS gateway) with the
link to their images when a share link is made for them or a report of theirs is signed.

:mod:`~pacs.notify.models` (the delivery log and the change feed cursor), :mod:`~pacs.notify.outbox`
(share links and ``report.signed`` events → deliveries → jobs, on the worker's housekeeping),
:mod:`~pacs.notify.messages` (what a message says: a link and a first name, never a finding),
:mod:`~pacs.notify.senders` (the :class:`~pacs.notify.senders.Notifier` interface: SMTP, SMS webhook)
and :mod:`~pacs.notify.delivery` (one job: send one delivery at most once).
"""
