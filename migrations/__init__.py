"""Alembic migrations of the cloudfilm index (the only way the schema is created)."""
