"""Quantity indexes led by the high end of the value, for gt/ge/sa searches.

Revision ID: records_0003
Revises: records_0002
Create Date: 2026-11-21
"""

from alembic import op

revision = "records_0003"
down_revision = "records_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_records_idx_quantity_code_high",
        "records_idx_quantity",
        ["resource_type", "param", "code", "high", "resource_pk"],
    )
    op.create_index(
        "ix_records_idx_quantity_canon_high",
        "records_idx_quantity",
        ["resource_type", "param", "canon_code", "canon_high", "resource_pk"],
    )


def downgrade() -> None:
    op.drop_index("ix_records_idx_quantity_canon_high", table_name="records_idx_quantity")
    op.drop_index("ix_records_idx_quantity_code_high", table_name="records_idx_quantity")
