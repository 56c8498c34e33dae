"""Network settings of the DICOM adapter (prefix ``CONDUIT_DICOM_``, YAML section ``dicom:``).

The PACS service reads its own half of the same section (services/pacs/settings.py). Example::

    dicom:
      port: 11112
      ae_title: CONDUIT
      remotes: "ORTHANC@127.0.0.1:4242,VIEWER@10.0.0.7:104"
      allowed_calling_aes: "CT01@10.0.0.21,MR01"
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from adapters.dicom.remotes import AllowedPeer, RemoteAE, parse_allowed, parse_remotes, valid_ae_title
from engine.settings import SectionSettings

__all__ = ["DicomSettings"]


class DicomSettings(SectionSettings):
    yaml_section = "dicom"
    model_config = SettingsConfigDict(env_prefix="CONDUIT_DICOM_", extra="ignore")

    port: int = Field(default=11112, description="DICOM listening port. Example: CONDUIT_DICOM_PORT=104")
    host: str | None = Field(
        default=None,
        description="Bind address; default CONDUIT_HOST (127.0.0.1). A non-loopback address needs TLS "
        "(tls_cert/tls_key) or an allow-list (allowed_calling_aes), or CONDUIT_INSECURE.",
    )
    ae_title: str = Field(
        default="CONDUIT",
        description="Our AE title. Associations whose Called AE Title differs are rejected (A-ASSOCIATE-RJ).",
    )
    remotes: str = Field(
        default="",
        description="Known remote AEs for C-MOVE destinations, forwarding and N-EVENT-REPORT, "
        "comma-separated AE@host:port. Example: CONDUIT_DICOM_REMOTES=ORTHANC@127.0.0.1:4242",
    )
    allowed_calling_aes: str = Field(
        default="",
        description="Calling AEs accepted from non-loopback addresses, comma-separated AE or AE@host "
        "(loopback peers are always accepted). Example: CT01@10.0.0.21,MR01",
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate: enables DICOM TLS (PS3.15 B.1)."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key for tls_cert.")
    tls_ca: Path | None = Field(
        default=None, description="CA bundle: when set, peers must present a certificate it signed."
    )
    max_pdu: int = Field(
        default=1_048_576,
        description="Maximum PDU length we receive (A-ASSOCIATE max length). Large PDUs cut per-PDU "
        "overhead on big images; 0 means unlimited.",
    )
    direct_store: bool = Field(
        default=True,
        description="Receive plain C-STORE requests outside pynetdicom's DIMSE machinery, each data set "
        "read straight into an aligned buffer that is written with direct I/O (adapters/dicom/direct_store.py). "
        "false sends every request through pynetdicom.",
    )
    max_associations: int = Field(default=32, description="Concurrent associations; more are rejected.")
    max_object_bytes: int = Field(
        default=2_000_000_000, description="Largest C-STORE object accepted; bigger ones fail with 0xA700."
    )
    network_timeout: float = Field(
        default=60.0, description="Seconds of silence before an association aborts."
    )
    retrieve_timeout: float = Field(
        default=30.0, description="Seconds to wait for a C-MOVE destination to accept the association."
    )

    @field_validator("ae_title")
    @classmethod
    def _check_ae(cls, value: str) -> str:
        if not valid_ae_title(value):
            raise ValueError("ae_title must be 1-16 printable characters without backslash")
        return value.strip()

    @field_validator("remotes")
    @classmethod
    def _check_remotes(cls, value: str) -> str:
        parse_remotes(value)
        return value

    @field_validator("allowed_calling_aes")
    @classmethod
    def _check_allowed(cls, value: str) -> str:
        parse_allowed(value)
        return value

    @property
    def remote_table(self) -> dict[str, RemoteAE]:
        return parse_remotes(self.remotes)

    @property
    def allowed_peers(self) -> list[AllowedPeer]:
        return parse_allowed(self.allowed_calling_aes)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None
