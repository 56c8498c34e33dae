"""Settings of the record store (environment prefix ``CONDUIT_RECORDS_``, YAML section ``records:``).

Example conduit.yaml::

    records:
      base_url: https://fhir.example.org/fhir
      default_count: 50
      max_count: 1000
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from engine.settings import SectionSettings

__all__ = ["RecordsSettings"]


class RecordsSettings(SectionSettings):
    yaml_section = "records"
    model_config = SettingsConfigDict(env_prefix="CONDUIT_RECORDS_", extra="ignore")

    base_url: str | None = Field(
        default=None,
        description="This server's public FHIR base. Absolute references under it are stored and searched as "
        "local Type/id references. Example: CONDUIT_RECORDS_BASE_URL=https://fhir.example.org/fhir",
    )
    default_count: int = Field(default=50, ge=1, description="Page size of a search without _count.")
    max_count: int = Field(
        default=1000, ge=1, description="Largest page a search returns, whatever _count asks."
    )
    analyze_interval: float = Field(
        default=1800.0,
        ge=0,
        description="Seconds between refreshes of SQLite's planner statistics (a bounded ANALYZE; the first "
        "runs a minute after start). 0 disables. PostgreSQL keeps its own (autovacuum). "
        "Example: CONDUIT_RECORDS_ANALYZE_INTERVAL=600",
    )
