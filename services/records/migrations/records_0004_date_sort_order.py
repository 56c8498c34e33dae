"""Date indexes ordered (value, resource_pk, other end): a _sort walks them in exactly its ORDER BY.

Revision ID: records_0004
Revises: records_0003
Create Date: 2026-11-21
"""

from alembic import op

revision = "records_0004"
down_revision = "records_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_records_idx_date_low", table_name="records_idx_date")
    op.create_index(
        "ix_records_idx_date_low",
        "records_idx_date",
        ["resource_type", "param", "low", "resource_pk", "high"],
    )
    op.drop_index("ix_records_idx_date_high", table_name="records_idx_date")
    op.create_index(
        "ix_records_idx_date_high",
        "records_idx_date",
        ["resource_type", "param", "high", "resource_pk", "low"],
    )


def downgrade() -> None:
    op.drop_index("ix_records_idx_date_high", table_name="records_idx_date")
    op.create_index(
        "ix_records_idx_date_high",
        "records_idx_date",
        ["resource_type", "param", "high", "low", "resource_pk"],
    )
    op.drop_index("ix_records_idx_date_low", table_name="records_idx_date")
    op.create_index(
        "ix_records_idx_date_low",
        "records_idx_date",
        ["resource_type", "param", "low", "high", "resource_pk"],
    )
