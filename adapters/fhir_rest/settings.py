"""Settings of the FHIR REST API (env ``CONDUIT_FHIR_*``, YAML section ``fhir:``).

The port, bind address, bearer token and TLS files are process-wide (``engine.settings.ConduitSettings``:
``CONDUIT_FHIR_PORT``, ``CONDUIT_HOST``, ``CONDUIT_AUTH_TOKEN``, ``CONDUIT_TLS_CERT``/``CONDUIT_TLS_KEY``).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from engine.settings import SectionSettings

__all__ = ["FhirRestSettings"]


class FhirRestSettings(SectionSettings):
    yaml_section = "fhir"
    model_config = SettingsConfigDict(env_prefix="CONDUIT_FHIR_", extra="ignore")

    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted; larger ones get 413. Example: CONDUIT_FHIR_MAX_BODY_BYTES=67108864",
    )
    default_count: int = Field(
        default=20, ge=1, description="Page size of searches and histories without _count. Example: 50"
    )
    max_count: int = Field(
        default=1000,
        ge=1,
        description="Largest _count honoured; larger values are lowered to it. Example: 500",
    )
    worker_threads: int = Field(
        default=40,
        ge=1,
        description="Threads that run repository calls (the concurrency of database work per process). "
        "Fewer threads contend less for the interpreter lock. Example: CONDUIT_FHIR_WORKER_THREADS=8",
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base URL written into Location, fullUrl and paging links when Conduit sits behind a "
        "proxy. Default: taken from each request. Example: https://fhir.example.org/fhir",
    )
