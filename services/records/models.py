"""The record-store tables (owned by services/records; others use the ``records`` port, never these models).

``records_resource`` holds the current version of each resource (its JSON as orjson text, served as stored
bytes), ``records_history`` every version including deletions. The typed search-index tables follow HAPI
FHIR and the Microsoft FHIR server: one row per extracted value, keyed by (resource row, parameter), with
composite indexes that start with (resource_type, param) so every search predicate is an index range scan,
and end with resource_pk so the scan is index-only (covering); the (resource_pk, param, value) indexes serve
re-indexing, _sort and the per-resource probes the same way.
Datetimes are naive UTC in every table, so SQLite and PostgreSQL compare them identically.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base

__all__ = [
    "ResourceRow",
    "HistoryRow",
    "TokenIndex",
    "StringIndex",
    "DateIndex",
    "NumberIndex",
    "QuantityIndex",
    "ReferenceIndex",
    "UriIndex",
    "INDEX_MODELS",
    "TYPE_LEN",
    "ID_LEN",
    "VALUE_LEN",
    "URL_LEN",
]

TYPE_LEN = 64
ID_LEN = 64  # R4 id: [A-Za-z0-9\-\.]{1,64}
VALUE_LEN = 255
URL_LEN = 512

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint identity for 100M+ rows.
PK = BigInteger().with_variant(Integer(), "sqlite")
# Normalized text is compared in binary order on both databases (SQLite's default), so a starts-with search
# is the index range [prefix, prefix+1) whatever the PostgreSQL locale.
NORM_STRING = String(VALUE_LEN).with_variant(String(VALUE_LEN, collation="C"), "postgresql")


class ResourceRow(Base):
    __tablename__ = "records_resource"
    __table_args__ = (
        UniqueConstraint("resource_type", "fhir_id"),
        Index("ix_records_resource_type_updated", "resource_type", "last_updated"),
    )

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(TYPE_LEN))
    fhir_id: Mapped[str] = mapped_column(String(ID_LEN))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    resource: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The current version's JSON (orjson text); NULL once deleted."""


class HistoryRow(Base):
    __tablename__ = "records_history"
    __table_args__ = (
        UniqueConstraint("resource_type", "fhir_id", "version_id"),
        Index("ix_records_history_type_updated", "resource_type", "last_updated"),
    )

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(
        ForeignKey("records_resource.pk", ondelete="CASCADE"), index=True
    )
    resource_type: Mapped[str] = mapped_column(String(TYPE_LEN))
    fhir_id: Mapped[str] = mapped_column(String(ID_LEN))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)
    method: Mapped[str] = mapped_column(String(8))  # POST | PUT | DELETE
    resource: Mapped[str | None] = mapped_column(Text, nullable=True)


class _IndexColumns:
    """Columns every index table shares."""

    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(TYPE_LEN))
    param: Mapped[str] = mapped_column(String(TYPE_LEN))


def _fk() -> Mapped[int]:
    return mapped_column(ForeignKey("records_resource.pk", ondelete="CASCADE"))


class TokenIndex(_IndexColumns, Base):
    """token: Coding/CodeableConcept (system, code), Identifier (system, value), ContactPoint (-, value),
    code/boolean/id/string primitives (-, value)."""

    __tablename__ = "records_idx_token"
    __table_args__ = (
        Index("ix_records_idx_token_res", "resource_pk", "param", "code"),
        Index("ix_records_idx_token_code", "resource_type", "param", "code", "system", "resource_pk"),
    )
    resource_pk: Mapped[int] = _fk()
    system: Mapped[str | None] = mapped_column(String(VALUE_LEN), nullable=True)
    code: Mapped[str | None] = mapped_column(String(VALUE_LEN), nullable=True)


class StringIndex(_IndexColumns, Base):
    """string: ``value_norm`` is case- and accent-folded for the default starts-with and :contains;
    ``value`` keeps the text as written for :exact. Token :text values use param ``<code>:text``."""

    __tablename__ = "records_idx_string"
    __table_args__ = (
        Index("ix_records_idx_string_res", "resource_pk", "param", "value_norm"),
        Index("ix_records_idx_string_norm", "resource_type", "param", "value_norm", "resource_pk"),
    )
    resource_pk: Mapped[int] = _fk()
    value_norm: Mapped[str] = mapped_column(NORM_STRING)
    value: Mapped[str] = mapped_column(String(VALUE_LEN))


class DateIndex(_IndexColumns, Base):
    """date: the inclusive instant range [low, high] each value denotes at its precision (naive UTC)."""

    __tablename__ = "records_idx_date"
    __table_args__ = (
        Index("ix_records_idx_date_res", "resource_pk", "param", "low", "high"),
        # (value, resource_pk) first: a sort walks these indexes in exactly its ORDER BY (value, key)
        Index("ix_records_idx_date_low", "resource_type", "param", "low", "resource_pk", "high"),
        Index("ix_records_idx_date_high", "resource_type", "param", "high", "resource_pk", "low"),
    )
    resource_pk: Mapped[int] = _fk()
    low: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    high: Mapped[datetime] = mapped_column(DateTime(timezone=False))


class NumberIndex(_IndexColumns, Base):
    __tablename__ = "records_idx_number"
    __table_args__ = (
        Index("ix_records_idx_number_res", "resource_pk", "param", "value"),
        Index("ix_records_idx_number_value", "resource_type", "param", "value", "resource_pk"),
    )
    resource_pk: Mapped[int] = _fk()
    value: Mapped[float] = mapped_column(Float)


class QuantityIndex(_IndexColumns, Base):
    """quantity: Quantity (low = high = value) and Range (low..high); ``code`` is Quantity.code, else its
    unit. ``canon_*`` hold the value in the UCUM base unit when the conversion is a simple prefix/factor.
    The ``*_high`` indexes serve gt/ge/sa (tests on the high end), the others eq/lt/le/eb."""

    __tablename__ = "records_idx_quantity"
    __table_args__ = (
        Index("ix_records_idx_quantity_res", "resource_pk", "param", "low"),
        Index("ix_records_idx_quantity_code", "resource_type", "param", "code", "low", "high", "resource_pk"),
        Index("ix_records_idx_quantity_code_high", "resource_type", "param", "code", "high", "resource_pk"),
        Index(
            "ix_records_idx_quantity_canon_high",
            "resource_type",
            "param",
            "canon_code",
            "canon_high",
            "resource_pk",
        ),
        Index(
            "ix_records_idx_quantity_canon",
            "resource_type",
            "param",
            "canon_code",
            "canon_low",
            "canon_high",
            "resource_pk",
        ),
    )
    resource_pk: Mapped[int] = _fk()
    low: Mapped[float | None] = mapped_column(Float, nullable=True)
    high: Mapped[float | None] = mapped_column(Float, nullable=True)
    system: Mapped[str | None] = mapped_column(String(VALUE_LEN), nullable=True)
    code: Mapped[str | None] = mapped_column(String(VALUE_LEN), nullable=True)
    canon_code: Mapped[str | None] = mapped_column(String(VALUE_LEN), nullable=True)
    canon_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    canon_high: Mapped[float | None] = mapped_column(Float, nullable=True)


class ReferenceIndex(_IndexColumns, Base):
    """reference: local target (type, id); ``url`` for absolute/canonical references; the logical
    identifier of the Reference when present (for ``:identifier``)."""

    __tablename__ = "records_idx_reference"
    __table_args__ = (
        Index("ix_records_idx_reference_res", "resource_pk", "param", "target_id"),
        Index(
            "ix_records_idx_reference_target",
            "resource_type",
            "param",
            "target_id",
            "target_type",
            "resource_pk",
        ),
        Index("ix_records_idx_reference_rev", "target_type", "target_id", "resource_type", "param"),
        # partial: a planner must never pick it for the "url IS NULL" of local-reference searches
        Index(
            "ix_records_idx_reference_url",
            "resource_type",
            "param",
            "url",
            "resource_pk",
            postgresql_where=text("url IS NOT NULL"),
            sqlite_where=text("url IS NOT NULL"),
        ),
        Index("ix_records_idx_reference_ident", "resource_type", "param", "ident_value", "resource_pk"),
    )
    resource_pk: Mapped[int] = _fk()
    target_type: Mapped[str | None] = mapped_column(String(TYPE_LEN), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    url: Mapped[str | None] = mapped_column(String(URL_LEN), nullable=True)
    ident_system: Mapped[str | None] = mapped_column(String(VALUE_LEN), nullable=True)
    ident_value: Mapped[str | None] = mapped_column(String(VALUE_LEN), nullable=True)


class UriIndex(_IndexColumns, Base):
    __tablename__ = "records_idx_uri"
    __table_args__ = (
        Index("ix_records_idx_uri_res", "resource_pk", "param", "uri"),
        Index("ix_records_idx_uri_uri", "resource_type", "param", "uri", "resource_pk"),
    )
    resource_pk: Mapped[int] = _fk()
    uri: Mapped[str] = mapped_column(String(URL_LEN))


#: index table per search-parameter type
INDEX_MODELS: dict[str, type[Base]] = {
    "token": TokenIndex,
    "string": StringIndex,
    "date": DateIndex,
    "number": NumberIndex,
    "quantity": QuantityIndex,
    "reference": ReferenceIndex,
    "uri": UriIndex,
}
