"""Add a ward to patients and users (a clinician sees the patients of their ward).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Plain ``ALTER TABLE ... ADD/DROP COLUMN`` on both backends, not a batch
(copy-and-rename) migration: the project's SQLite connections run with
``foreign_keys=ON``, and dropping the old ``patients`` or ``users`` table in
a batch rebuild would cascade-delete their alarms, vitals and assignments.
Dropping a column natively needs SQLite 3.35 or newer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_TABLES = ("patients", "users")


def upgrade() -> None:
    """Upgrade the schema: a nullable ``ward`` on ``patients`` and ``users``."""
    for table in _TABLES:
        op.add_column(table, sa.Column("ward", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade the schema: drop the ``ward`` columns (their values are lost)."""
    for table in _TABLES:
        op.drop_column(table, "ward")
