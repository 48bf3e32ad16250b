"""Accounts, roles, share links and the audit trail; see :mod:`pacs.access` for what each may see."""
