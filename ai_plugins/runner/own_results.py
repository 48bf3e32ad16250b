"""What a plugin job may see of the study's results: its own vendor's, never another vendor's.

A job token's scope withholds every result object of its study (SR, SEG: ``pacs.access``) but the
ones this returns: those recorded in ``plugin_results`` for the plugins of the job's vendor. A
plugin name belongs to one vendor (the account that registered it, see the registry), so the
vendor's plugins are the remote plugins registered by that account; an installed (entry-point)
plugin has no vendor account and sees only its own name's results. Read on every request, like the
token's other checks, so results stored a moment ago (recorded before they are stored) are there.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import Engine, select

from ai_plugins.runner.models import PluginRecord, PluginResult
from ai_plugins.runner.registry import PluginSource
from pacs.accounts.principal import Principal


def vendor_results(engine: Engine, study_uid: str, plugin_name: str) -> frozenset[str]:
    """SOP Instance UIDs of the results in ``study_uid`` of the plugins of ``plugin_name``'s vendor."""
    remote = PluginSource.REMOTE.value
    with engine.connect() as conn:
        owner = conn.execute(select(PluginRecord.registered_by).where(
            PluginRecord.name == plugin_name, PluginRecord.source == remote, PluginRecord.registered_by != "",
        )).scalars().first()  # fmt: skip
        mine = PluginResult.plugin_name == plugin_name
        if owner is not None:
            mine = PluginResult.plugin_name.in_(select(PluginRecord.name).where(
                PluginRecord.source == remote, PluginRecord.registered_by == owner))  # fmt: skip
        rows = conn.execute(select(PluginResult.sop_uid).where(PluginResult.study_uid == study_uid, mine)).scalars()
        return frozenset(rows)


def release_own_results(engine: Engine, principal: Principal) -> Principal:
    """``principal`` with its job's vendor's results released to it (any other principal as it is)."""
    if principal.job is None or principal.role is not None:
        return principal
    name = principal.job.plugin.split("@", 1)[0]
    own = vendor_results(engine, principal.job.study_uid, name)
    return dataclasses.replace(principal, released_sop_uids=principal.released_sop_uids | own)
