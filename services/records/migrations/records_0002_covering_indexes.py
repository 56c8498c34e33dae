"""Covering search indexes: every (resource_type, param, value...) index ends with resource_pk, and every
(resource_pk, param) index carries the value, so searches, sorts and intersections are index-only scans.

Revision ID: records_0002
Revises: records_0001
Create Date: 2026-11-21
"""

from alembic import op

revision = "records_0002"
down_revision = "records_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
    op.drop_index("ix_records_idx_date_res", table_name="records_idx_date")
    op.create_index("ix_records_idx_date_res", "records_idx_date", ["resource_pk", "param", "low", "high"])
    op.drop_index("ix_records_idx_number_res", table_name="records_idx_number")
    op.create_index("ix_records_idx_number_res", "records_idx_number", ["resource_pk", "param", "value"])
    op.drop_index("ix_records_idx_number_value", table_name="records_idx_number")
    op.create_index(
        "ix_records_idx_number_value",
        "records_idx_number",
        ["resource_type", "param", "value", "resource_pk"],
    )
    op.drop_index("ix_records_idx_quantity_canon", table_name="records_idx_quantity")
    op.create_index(
        "ix_records_idx_quantity_canon",
        "records_idx_quantity",
        ["resource_type", "param", "canon_code", "canon_low", "canon_high", "resource_pk"],
    )
    op.drop_index("ix_records_idx_quantity_code", table_name="records_idx_quantity")
    op.create_index(
        "ix_records_idx_quantity_code",
        "records_idx_quantity",
        ["resource_type", "param", "code", "low", "high", "resource_pk"],
    )
    op.drop_index("ix_records_idx_quantity_res", table_name="records_idx_quantity")
    op.create_index("ix_records_idx_quantity_res", "records_idx_quantity", ["resource_pk", "param", "low"])
    op.drop_index("ix_records_idx_reference_ident", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_ident",
        "records_idx_reference",
        ["resource_type", "param", "ident_value", "resource_pk"],
    )
    op.drop_index("ix_records_idx_reference_res", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_res", "records_idx_reference", ["resource_pk", "param", "target_id"]
    )
    op.drop_index("ix_records_idx_reference_rev", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_rev",
        "records_idx_reference",
        ["target_type", "target_id", "resource_type", "param"],
    )
    op.drop_index("ix_records_idx_reference_target", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_target",
        "records_idx_reference",
        ["resource_type", "param", "target_id", "target_type", "resource_pk"],
    )
    op.drop_index("ix_records_idx_reference_url", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_url",
        "records_idx_reference",
        ["resource_type", "param", "url", "resource_pk"],
    )
    op.drop_index("ix_records_idx_string_norm", table_name="records_idx_string")
    op.create_index(
        "ix_records_idx_string_norm",
        "records_idx_string",
        ["resource_type", "param", "value_norm", "resource_pk"],
    )
    op.drop_index("ix_records_idx_string_res", table_name="records_idx_string")
    op.create_index("ix_records_idx_string_res", "records_idx_string", ["resource_pk", "param", "value_norm"])
    op.drop_index("ix_records_idx_token_code", table_name="records_idx_token")
    op.create_index(
        "ix_records_idx_token_code",
        "records_idx_token",
        ["resource_type", "param", "code", "system", "resource_pk"],
    )
    op.drop_index("ix_records_idx_token_res", table_name="records_idx_token")
    op.create_index("ix_records_idx_token_res", "records_idx_token", ["resource_pk", "param", "code"])
    op.drop_index("ix_records_idx_uri_res", table_name="records_idx_uri")
    op.create_index("ix_records_idx_uri_res", "records_idx_uri", ["resource_pk", "param", "uri"])
    op.drop_index("ix_records_idx_uri_uri", table_name="records_idx_uri")
    op.create_index(
        "ix_records_idx_uri_uri", "records_idx_uri", ["resource_type", "param", "uri", "resource_pk"]
    )


def downgrade() -> None:
    op.drop_index("ix_records_idx_date_high", table_name="records_idx_date")
    op.create_index("ix_records_idx_date_high", "records_idx_date", ["resource_type", "param", "high"])
    op.drop_index("ix_records_idx_date_low", table_name="records_idx_date")
    op.create_index("ix_records_idx_date_low", "records_idx_date", ["resource_type", "param", "low", "high"])
    op.drop_index("ix_records_idx_date_res", table_name="records_idx_date")
    op.create_index("ix_records_idx_date_res", "records_idx_date", ["resource_pk", "param"])
    op.drop_index("ix_records_idx_number_res", table_name="records_idx_number")
    op.create_index("ix_records_idx_number_res", "records_idx_number", ["resource_pk", "param"])
    op.drop_index("ix_records_idx_number_value", table_name="records_idx_number")
    op.create_index("ix_records_idx_number_value", "records_idx_number", ["resource_type", "param", "value"])
    op.drop_index("ix_records_idx_quantity_canon", table_name="records_idx_quantity")
    op.create_index(
        "ix_records_idx_quantity_canon",
        "records_idx_quantity",
        ["resource_type", "param", "canon_code", "canon_low"],
    )
    op.drop_index("ix_records_idx_quantity_code", table_name="records_idx_quantity")
    op.create_index(
        "ix_records_idx_quantity_code", "records_idx_quantity", ["resource_type", "param", "code", "low"]
    )
    op.drop_index("ix_records_idx_quantity_res", table_name="records_idx_quantity")
    op.create_index("ix_records_idx_quantity_res", "records_idx_quantity", ["resource_pk", "param"])
    op.drop_index("ix_records_idx_reference_ident", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_ident", "records_idx_reference", ["resource_type", "param", "ident_value"]
    )
    op.drop_index("ix_records_idx_reference_res", table_name="records_idx_reference")
    op.create_index("ix_records_idx_reference_res", "records_idx_reference", ["resource_pk", "param"])
    op.drop_index("ix_records_idx_reference_rev", table_name="records_idx_reference")
    op.create_index("ix_records_idx_reference_rev", "records_idx_reference", ["target_type", "target_id"])
    op.drop_index("ix_records_idx_reference_target", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_target",
        "records_idx_reference",
        ["resource_type", "param", "target_id", "target_type"],
    )
    op.drop_index("ix_records_idx_reference_url", table_name="records_idx_reference")
    op.create_index(
        "ix_records_idx_reference_url", "records_idx_reference", ["resource_type", "param", "url"]
    )
    op.drop_index("ix_records_idx_string_norm", table_name="records_idx_string")
    op.create_index(
        "ix_records_idx_string_norm", "records_idx_string", ["resource_type", "param", "value_norm"]
    )
    op.drop_index("ix_records_idx_string_res", table_name="records_idx_string")
    op.create_index("ix_records_idx_string_res", "records_idx_string", ["resource_pk", "param"])
    op.drop_index("ix_records_idx_token_code", table_name="records_idx_token")
    op.create_index(
        "ix_records_idx_token_code", "records_idx_token", ["resource_type", "param", "code", "system"]
    )
    op.drop_index("ix_records_idx_token_res", table_name="records_idx_token")
    op.create_index("ix_records_idx_token_res", "records_idx_token", ["resource_pk", "param"])
    op.drop_index("ix_records_idx_uri_res", table_name="records_idx_uri")
    op.create_index("ix_records_idx_uri_res", "records_idx_uri", ["resource_pk", "param"])
    op.drop_index("ix_records_idx_uri_uri", table_name="records_idx_uri")
    op.create_index("ix_records_idx_uri_uri", "records_idx_uri", ["resource_type", "param", "uri"])
