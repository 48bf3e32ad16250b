"""Routing rules: instances forwarded to DICOM (C-STORE) and DICOMweb (STOW-RS) peers as they arrive
or once their study is stable, through the job queue (``kind = "forward"``).

:mod:`~pacs.routing.rules` (the ``[routing]`` TOML table and what a rule matches),
:mod:`~pacs.routing.models` (forward rows and each rule's place in the change feed),
:mod:`~pacs.routing.dispatch` (change feed → forwards → one job per destination and study),
:mod:`~pacs.routing.senders` (C-STORE and STOW-RS), :mod:`~pacs.routing.forward` (one job's work).
"""
