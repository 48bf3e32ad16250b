"""Inference at the edge (issue 15): ``cloudfilm worker --archive URL --token TOKEN`` on a hospital's
own machine, with no index database or object store of its own.

The edge worker runs the archive's job loop (:mod:`ai_plugins.runner.loop`) against the archive's
HTTP API (:mod:`~ai_plugins.edge.client`): it leases clinical plugin jobs of the plugins installed
on it, reads each job's study over DICOMweb with the job's token (:mod:`~ai_plugins.edge.source`),
runs the plugin in a child process the way the archive's workers do
(:func:`ai_plugins.runner.invoke.run_installed`) and sends the findings JSON back. The archive
(:mod:`~ai_plugins.edge.service`) validates the findings against the SDK schema, writes the SR/SEG
itself with the job's UIDs and stores them through its ingest path in the transaction that
completes the job: one SR writer, whoever ran the plugin, and one SR per job, however often an
attempt's result arrives.
"""
