"""messaging: message store and stage queue

Revision ID: a1c0messaging01
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a1c0messaging01"
down_revision = None
branch_labels = ("messaging",)
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "message",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("peer", sa.String(200), nullable=False),
        sa.Column("sending_application", sa.String(200), nullable=False),
        sa.Column("sending_facility", sa.String(200), nullable=False),
        sa.Column("control_id", sa.String(200), nullable=False),
        sa.Column("message_type", sa.String(20), nullable=False),
        sa.Column("trigger_event", sa.String(20), nullable=False),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("ack_code", sa.String(2), nullable=False),
        sa.Column("dedup_key", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reprocessed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_message"),
        sa.UniqueConstraint("dedup_key", name="uq_message_dedup_key"),
    )
    op.create_index("ix_message_channel", "message", ["channel"])
    op.create_index("ix_message_received_at", "message", ["received_at"])
    op.create_index("ix_message_control_id", "message", ["control_id"])
    op.create_index("ix_message_status", "message", ["status"])
    op.create_table(
        "message_stage",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("destination", sa.String(100), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("queue", sa.String(250), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("content_type", sa.String(100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_message_stage"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["message.id"], name="fk_message_stage_message_id_message", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_message_stage_message_id", "message_stage", ["message_id"])
    op.create_index("ix_message_stage_claim", "message_stage", ["queue", "status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("message_stage")
    op.drop_table("message")
