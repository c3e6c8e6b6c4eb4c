"""Bearer tokens for EHR systems (FHIR API) and the data-key id of each signal chunk.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

``signal_chunks.key_id`` names the key a chunk's payload is encrypted under
(``NULL``: stored in clear, as every chunk written before this revision), so
that key rotation can find and re-encrypt the chunks of an old key in batches.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Upgrade the schema: an ``api_tokens`` table and ``signal_chunks.key_id``."""
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("ward", sa.String(length=64), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_api_tokens_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.add_column("signal_chunks", sa.Column("key_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    """Downgrade the schema (encrypted chunks stay encrypted; decrypt them first)."""
    op.drop_column("signal_chunks", "key_id")
    op.drop_table("api_tokens")
