"""Retention and tiering: rules in the ``[retention]`` TOML table move studies' objects to colder
storage or delete studies after a grace period, in a nightly job of the one worker.

:mod:`~pacs.retention.rules` (the table and what a rule matches), :mod:`~pacs.retention.models`
(legal holds and deletion marks), :mod:`~pacs.retention.holds` (legal holds),
:mod:`~pacs.retention.last_access` (when a study was last opened, written at most hourly),
:mod:`~pacs.retention.plan` (what a run would do, changing nothing), :mod:`~pacs.retention.run`
(doing it, every action audited), :mod:`~pacs.retention.tiering` (moving one study's objects),
:mod:`~pacs.retention.schedule` (the nightly job, queued once per day whatever the node count).
"""
