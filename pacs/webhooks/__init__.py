"""Webhooks: admin-registered URLs that receive each change feed event (:mod:`pacs.events`) as
signed JSON, at least once and in order per study, through the durable job queue.

:mod:`~pacs.webhooks.models` (tables), :mod:`~pacs.webhooks.registry` (register, list, delete,
the delivery log), :mod:`~pacs.webhooks.signing` (the HMAC signature a receiver verifies),
:mod:`~pacs.webhooks.dispatch` (feed events → deliveries → jobs, on the worker's housekeeping) and
:mod:`~pacs.webhooks.delivery` (one job: POST a study's pending deliveries in order).
"""
