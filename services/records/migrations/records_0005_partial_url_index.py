"""The reference url index covers absolute/canonical references only (partial, url IS NOT NULL): without
statistics SQLite otherwise chose it for the ``url IS NULL`` test of every local-reference search and read
all references of the parameter.

Revision ID: records_0005
Revises: records_0004
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "records_0005"
down_revision = "records_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_records_idx_reference_url", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_url",
        "records_idx_reference",
        ["resource_type", "param", "url", "resource_pk"],
        postgresql_where=sa.text("url IS NOT NULL"),
        sqlite_where=sa.text("url IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_records_idx_reference_url", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_url",
        "records_idx_reference",
        ["resource_type", "param", "url", "resource_pk"],
    )
