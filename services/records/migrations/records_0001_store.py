"""Record store: current resources, history and the typed search-index tables.

Revision ID: records_0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "records_0001"
down_revision = None
branch_labels = ("records",)
depends_on = None

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets bigint keys.
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# normalized search text compares in binary order on PostgreSQL too (index range for starts-with)
NORM = sa.String(length=255).with_variant(sa.String(length=255, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "records_resource",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("fhir_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_resource")),
        sa.UniqueConstraint(
            "resource_type", "fhir_id", name=op.f("uq_records_resource_resource_type_fhir_id")
        ),
    )
    op.create_index(
        "ix_records_resource_type_updated",
        "records_resource",
        ["resource_type", "last_updated"],
        unique=False,
    )
    op.create_table(
        "records_history",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_pk", PK, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("fhir_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("resource", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["records_resource.pk"],
            name=op.f("fk_records_history_resource_pk_records_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_history")),
        sa.UniqueConstraint(
            "resource_type",
            "fhir_id",
            "version_id",
            name=op.f("uq_records_history_resource_type_fhir_id_version_id"),
        ),
    )
    op.create_index(
        op.f("ix_records_history_last_updated"), "records_history", ["last_updated"], unique=False
    )
    op.create_index(op.f("ix_records_history_resource_pk"), "records_history", ["resource_pk"], unique=False)
    op.create_index(
        "ix_records_history_type_updated", "records_history", ["resource_type", "last_updated"], unique=False
    )
    op.create_table(
        "records_idx_date",
        sa.Column("resource_pk", PK, nullable=False),
        sa.Column("low", sa.DateTime(), nullable=False),
        sa.Column("high", sa.DateTime(), nullable=False),
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["records_resource.pk"],
            name=op.f("fk_records_idx_date_resource_pk_records_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_idx_date")),
    )
    op.create_index(
        "ix_records_idx_date_high", "records_idx_date", ["resource_type", "param", "high"], unique=False
    )
    op.create_index(
        "ix_records_idx_date_low", "records_idx_date", ["resource_type", "param", "low", "high"], unique=False
    )
    op.create_index("ix_records_idx_date_res", "records_idx_date", ["resource_pk", "param"], unique=False)
    op.create_table(
        "records_idx_number",
        sa.Column("resource_pk", PK, nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["records_resource.pk"],
            name=op.f("fk_records_idx_number_resource_pk_records_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_idx_number")),
    )
    op.create_index("ix_records_idx_number_res", "records_idx_number", ["resource_pk", "param"], unique=False)
    op.create_index(
        "ix_records_idx_number_value", "records_idx_number", ["resource_type", "param", "value"], unique=False
    )
    op.create_table(
        "records_idx_quantity",
        sa.Column("resource_pk", PK, nullable=False),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=255), nullable=True),
        sa.Column("canon_code", sa.String(length=255), nullable=True),
        sa.Column("canon_low", sa.Float(), nullable=True),
        sa.Column("canon_high", sa.Float(), nullable=True),
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["records_resource.pk"],
            name=op.f("fk_records_idx_quantity_resource_pk_records_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_idx_quantity")),
    )
    op.create_index(
        "ix_records_idx_quantity_canon",
        "records_idx_quantity",
        ["resource_type", "param", "canon_code", "canon_low"],
        unique=False,
    )
    op.create_index(
        "ix_records_idx_quantity_code",
        "records_idx_quantity",
        ["resource_type", "param", "code", "low"],
        unique=False,
    )
    op.create_index(
        "ix_records_idx_quantity_res", "records_idx_quantity", ["resource_pk", "param"], unique=False
    )
    op.create_table(
        "records_idx_reference",
        sa.Column("resource_pk", PK, nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.String(length=512), nullable=True),
        sa.Column("ident_system", sa.String(length=255), nullable=True),
        sa.Column("ident_value", sa.String(length=255), nullable=True),
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["records_resource.pk"],
            name=op.f("fk_records_idx_reference_resource_pk_records_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_idx_reference")),
    )
    op.create_index(
        "ix_records_idx_reference_ident",
        "records_idx_reference",
        ["resource_type", "param", "ident_value"],
        unique=False,
    )
    op.create_index(
        "ix_records_idx_reference_res", "records_idx_reference", ["resource_pk", "param"], unique=False
    )
    op.create_index(
        "ix_records_idx_reference_rev", "records_idx_reference", ["target_type", "target_id"], unique=False
    )
    op.create_index(
        "ix_records_idx_reference_target",
        "records_idx_reference",
        ["resource_type", "param", "target_id", "target_type"],
        unique=False,
    )
    op.create_index(
        "ix_records_idx_reference_url",
        "records_idx_reference",
        ["resource_type", "param", "url"],
        unique=False,
    )
    op.create_table(
        "records_idx_string",
        sa.Column("resource_pk", PK, nullable=False),
        sa.Column("value_norm", NORM, nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["records_resource.pk"],
            name=op.f("fk_records_idx_string_resource_pk_records_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_idx_string")),
    )
    op.create_index(
        "ix_records_idx_string_norm",
        "records_idx_string",
        ["resource_type", "param", "value_norm"],
        unique=False,
    )
    op.create_index("ix_records_idx_string_res", "records_idx_string", ["resource_pk", "param"], unique=False)
    op.create_table(
        "records_idx_token",
        sa.Column("resource_pk", PK, nullable=False),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=255), nullable=True),
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["records_resource.pk"],
            name=op.f("fk_records_idx_token_resource_pk_records_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_idx_token")),
    )
    op.create_index(
        "ix_records_idx_token_code",
        "records_idx_token",
        ["resource_type", "param", "code", "system"],
        unique=False,
    )
    op.create_index("ix_records_idx_token_res", "records_idx_token", ["resource_pk", "param"], unique=False)
    op.create_table(
        "records_idx_uri",
        sa.Column("resource_pk", PK, nullable=False),
        sa.Column("uri", sa.String(length=512), nullable=False),
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["records_resource.pk"],
            name=op.f("fk_records_idx_uri_resource_pk_records_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_records_idx_uri")),
    )
    op.create_index("ix_records_idx_uri_res", "records_idx_uri", ["resource_pk", "param"], unique=False)
    op.create_index(
        "ix_records_idx_uri_uri", "records_idx_uri", ["resource_type", "param", "uri"], unique=False
    )


def downgrade() -> None:
    op.drop_table("records_idx_uri")
    op.drop_table("records_idx_token")
    op.drop_table("records_idx_string")
    op.drop_table("records_idx_reference")
    op.drop_table("records_idx_quantity")
    op.drop_table("records_idx_number")
    op.drop_table("records_idx_date")
    op.drop_table("records_history")
    op.drop_table("records_resource")
