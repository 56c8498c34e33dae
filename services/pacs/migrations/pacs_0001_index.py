"""PACS index: patient/study/series/instance, MPPS and the forward queue.

Revision ID: pacs_0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "pacs_0001"
down_revision = None
branch_labels = ("pacs",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pacs_forward_job",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_pacs_forward_job")),
    )
    op.create_index(
        op.f("ix_pacs_forward_job_next_attempt_at"), "pacs_forward_job", ["next_attempt_at"], unique=False
    )
    op.create_index(
        op.f("ix_pacs_forward_job_sop_instance_uid"), "pacs_forward_job", ["sop_instance_uid"], unique=False
    )
    op.create_index(op.f("ix_pacs_forward_job_status"), "pacs_forward_job", ["status"], unique=False)
    op.create_table(
        "pacs_mpps",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("procedure_id", sa.String(length=64), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_pacs_mpps")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_pacs_mpps_sop_instance_uid")),
    )
    op.create_table(
        "pacs_patient",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=False),
        sa.Column("patient_name_norm", sa.String(length=324), nullable=False),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=False),
        sa.Column("patient_sex", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_pacs_patient")),
        sa.UniqueConstraint("patient_id", name=op.f("uq_pacs_patient_patient_id")),
    )
    op.create_index(
        op.f("ix_pacs_patient_patient_name_norm"), "pacs_patient", ["patient_name_norm"], unique=False
    )
    op.create_table(
        "pacs_study",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("study_time", sa.String(length=16), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("study_id", sa.String(length=16), nullable=False),
        sa.Column("study_description", sa.String(length=64), nullable=False),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=False),
        sa.Column("referring_physician_name_norm", sa.String(length=324), nullable=False),
        sa.Column("modalities_in_study", sa.String(length=256), nullable=False),
        sa.Column("fhir_dirty", sa.Boolean(), nullable=False),
        sa.Column("change_seq", sa.Integer(), nullable=False),
        sa.Column("imaging_study_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["pacs_patient.pk"], name=op.f("fk_pacs_study_patient_pk_pacs_patient")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_pacs_study")),
        sa.UniqueConstraint("study_instance_uid", name=op.f("uq_pacs_study_study_instance_uid")),
    )
    op.create_index(op.f("ix_pacs_study_accession_number"), "pacs_study", ["accession_number"], unique=False)
    op.create_index(op.f("ix_pacs_study_fhir_dirty"), "pacs_study", ["fhir_dirty"], unique=False)
    op.create_index(op.f("ix_pacs_study_patient_pk"), "pacs_study", ["patient_pk"], unique=False)
    op.create_index(op.f("ix_pacs_study_study_date"), "pacs_study", ["study_date"], unique=False)
    op.create_table(
        "pacs_series",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(length=64), nullable=False),
        sa.Column("series_date", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["pacs_study.pk"], name=op.f("fk_pacs_series_study_pk_pacs_study")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_pacs_series")),
        sa.UniqueConstraint("series_instance_uid", name=op.f("uq_pacs_series_series_instance_uid")),
    )
    op.create_index(op.f("ix_pacs_series_modality"), "pacs_series", ["modality"], unique=False)
    op.create_index(op.f("ix_pacs_series_study_pk"), "pacs_series", ["study_pk"], unique=False)
    op.create_table(
        "pacs_instance",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_pk"], ["pacs_series.pk"], name=op.f("fk_pacs_instance_series_pk_pacs_series")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_pacs_instance")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_pacs_instance_sop_instance_uid")),
    )
    op.create_index(op.f("ix_pacs_instance_series_pk"), "pacs_instance", ["series_pk"], unique=False)
    op.create_index(op.f("ix_pacs_instance_sop_class_uid"), "pacs_instance", ["sop_class_uid"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_pacs_instance_sop_class_uid"), table_name="pacs_instance")
    op.drop_index(op.f("ix_pacs_instance_series_pk"), table_name="pacs_instance")
    op.drop_table("pacs_instance")
    op.drop_index(op.f("ix_pacs_series_study_pk"), table_name="pacs_series")
    op.drop_index(op.f("ix_pacs_series_modality"), table_name="pacs_series")
    op.drop_table("pacs_series")
    op.drop_index(op.f("ix_pacs_study_study_date"), table_name="pacs_study")
    op.drop_index(op.f("ix_pacs_study_patient_pk"), table_name="pacs_study")
    op.drop_index(op.f("ix_pacs_study_fhir_dirty"), table_name="pacs_study")
    op.drop_index(op.f("ix_pacs_study_accession_number"), table_name="pacs_study")
    op.drop_table("pacs_study")
    op.drop_index(op.f("ix_pacs_patient_patient_name_norm"), table_name="pacs_patient")
    op.drop_table("pacs_patient")
    op.drop_table("pacs_mpps")
    op.drop_index(op.f("ix_pacs_forward_job_status"), table_name="pacs_forward_job")
    op.drop_index(op.f("ix_pacs_forward_job_sop_instance_uid"), table_name="pacs_forward_job")
    op.drop_index(op.f("ix_pacs_forward_job_next_attempt_at"), table_name="pacs_forward_job")
    op.drop_table("pacs_forward_job")
