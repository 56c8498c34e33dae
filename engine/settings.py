"""Typed settings, read from ``CONDUIT_*`` environment variables and an optional ``conduit.yaml``.

Precedence (highest first): explicit keyword arguments, environment variables, the YAML file, defaults.
The YAML file is ``$CONDUIT_CONFIG`` if set, else ``./conduit.yaml`` when it exists.

Every area of the product keeps its own settings class beside its code (``adapters/mllp/settings.py``,
``services/pacs/settings.py`` ...), built on :class:`SectionSettings` with its own environment prefix and
YAML section, so the same key can be written ``CONDUIT_DICOM_AE_TITLE=X`` or, in conduit.yaml::

    dicom:
      ae_title: X

Every field is documented where it is defined, with its default; ``conduit settings`` prints them all.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from engine.errors import ConfigurationError

__all__ = ["ConduitSettings", "SectionSettings", "config_file", "get_settings", "is_loopback"]


def config_file() -> Path | None:
    """The YAML configuration file in force, if any."""
    explicit = os.environ.get("CONDUIT_CONFIG")
    if explicit:
        return Path(explicit)
    default = Path("conduit.yaml")
    return default if default.exists() else None


def is_loopback(host: str) -> bool:
    """True when ``host`` only reaches this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _YamlSection(InitSettingsSource):
    """One section of conduit.yaml (the top level when ``section`` is None). A file that leaves a section
    out simply sets nothing there: every area has defaults, so a site writes only what it changes."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, section: str | None) -> None:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigurationError(f"{path}: configuration file not found (CONDUIT_CONFIG)") from None
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigurationError(f"{path}: expected a mapping of settings at the top level")
        values = document.get(section) if section else document
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigurationError(f"{path}: section '{section}' must be a mapping of settings")
        super().__init__(settings_cls, init_kwargs=values)


class SectionSettings(BaseSettings):
    """Base for one area's settings: env prefix ``CONDUIT_<AREA>_`` and the YAML section ``<area>:``.

    Subclasses set ``yaml_section`` and ``model_config = SettingsConfigDict(env_prefix=...)``.
    """

    yaml_section: ClassVar[str | None] = None
    model_config = SettingsConfigDict(env_prefix="CONDUIT_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(_YamlSection(settings_cls, path, cls.yaml_section))
        return tuple(sources)


class ConduitSettings(SectionSettings):
    """Process-wide settings shared by every listener and service."""

    model_config = SettingsConfigDict(env_prefix="CONDUIT_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./conduit-data"),
        description="Folder for the embedded database, stored DICOM files and other state. "
        "Example: CONDUIT_DATA_DIR=/var/lib/conduit",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the shared database. Default: a SQLite file "
        "<data_dir>/conduit.db. Example: postgresql+psycopg://conduit@db.example/conduit",
    )
    host: str = Field(
        default="127.0.0.1",
        description="Address every listener binds unless its own setting overrides it. Anything but "
        "loopback needs auth_token and TLS configured (or --insecure).",
    )
    auth_token: str | None = Field(
        default=None,
        description="Bearer token required on the HTTP interfaces when set. Example: CONDUIT_AUTH_TOKEN=s3cret",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate for the HTTP listener (TLS).")
    tls_key: Path | None = Field(default=None, description="PEM private key for tls_cert.")
    fhir_port: int = Field(default=8080, description="Port of the FHIR REST API (base path /fhir).")
    log_level: str = Field(default="INFO", description="Logging level: DEBUG, INFO, WARNING, ERROR.")
    insecure: bool = Field(
        default=False,
        description="Allow binding beyond loopback without auth/TLS. Loud warning; for labs only.",
    )
    mllp_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes receiving MLLP (`conduit serve`): above 1, the server starts that many "
        "minus one ingest-only children that share every MLLP port with it (SO_REUSEPORT, Linux), each "
        "with its own event loop and inbox writer, so several cores store and acknowledge; the FHIR API, "
        "DICOM and the queue workers stay in the main process. A connection stays in the process that "
        "accepted it. Metrics of a child's connections are not in /metrics (per process). "
        "Example: CONDUIT_MLLP_PROCESSES=2",
    )

    @model_validator(mode="after")
    def _default_database(self) -> ConduitSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'conduit.db').resolve()}"
        return self

    @property
    def is_embedded(self) -> bool:
        return str(self.database_url).startswith("sqlite")

    def exposure_problem(self, host: str | None = None) -> str | None:
        """Why binding ``host`` would expose patient data unsafely, or None when it is fine."""
        host = host or self.host
        if is_loopback(host) or self.insecure:
            return None
        missing = []
        if not self.auth_token:
            missing.append("CONDUIT_AUTH_TOKEN")
        if not (self.tls_cert and self.tls_key):
            missing.append("CONDUIT_TLS_CERT and CONDUIT_TLS_KEY")
        if not missing:
            return None
        return (
            f"refusing to listen on {host}: it is reachable from other machines and "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. "
            "Configure authentication and TLS, bind 127.0.0.1, or pass --insecure (lab use only)."
        )


@lru_cache(maxsize=1)
def get_settings() -> ConduitSettings:
    """The process settings (cached; tests build their own ``ConduitSettings(...)``)."""
    return ConduitSettings()


def describe(settings_cls: type[BaseSettings]) -> list[dict[str, Any]]:
    """Name, env variable, default and description of every field (for ``conduit settings``)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    rows = []
    for name, field in settings_cls.model_fields.items():
        rows.append(
            {
                "name": name,
                "env": f"{prefix}{name}".upper(),
                "default": field.default,
                "description": field.description or "",
            }
        )
    return rows
