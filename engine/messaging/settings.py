"""Settings of the message store, queue workers and channel files (``CONDUIT_MESSAGING_*``, YAML ``messaging:``).

``CONDUIT_CHANNELS_DIR`` is fixed by the issue (not prefixed): a site's own channel files, read after the
shipped ``mappings/channels/``; a site file with the same ``name:`` replaces the shipped channel.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from engine.settings import SectionSettings

__all__ = ["MessagingSettings", "SHIPPED_CHANNELS_DIR"]

#: channel files shipped with Conduit (the default channel)
SHIPPED_CHANNELS_DIR = Path(__file__).resolve().parents[2] / "mappings" / "channels"


class MessagingSettings(SectionSettings):
    yaml_section = "messaging"
    model_config = SettingsConfigDict(env_prefix="CONDUIT_MESSAGING_", extra="ignore")

    channels_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("CONDUIT_CHANNELS_DIR", "channels_dir"),
        description="Folder of site channel files (*.yaml), read after the shipped ones. "
        "Example: CONDUIT_CHANNELS_DIR=/etc/conduit/channels",
    )
    shipped_channels: bool = Field(
        default=True,
        description="Load the channels shipped in mappings/channels (the default MLLP channel). "
        "Example: CONDUIT_MESSAGING_SHIPPED_CHANNELS=false",
    )
    group_commit_max: int = Field(
        default=500,
        ge=1,
        description="Most received messages committed in one transaction by the inbox writer.",
    )
    inbox_writers: int | None = Field(
        default=None,
        ge=1,
        description="Threads committing received messages. Default 1: it commits, in one transaction, "
        "all that arrived during its previous commit. More overlap commits (for a database whose commit "
        "takes long, e.g. over a network); on SQLite they take turns.",
    )
    inbox_on_loop: bool = Field(
        default=True,
        description="PostgreSQL: commit received messages on the event loop that received them (no thread "
        "hand-off); the writer threads then take only duplicates and retries. Example: "
        "CONDUIT_MESSAGING_INBOX_ON_LOOP=false",
    )
    workers: bool = Field(
        default=True,
        description="Run the queue workers (pipeline and deliveries) in this process. Several processes "
        "sharing one PostgreSQL may split the work: CONDUIT_MESSAGING_WORKERS=false on the listener "
        "that must answer fastest, workers elsewhere.",
    )
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a worker's claim on a queued stage lasts; a crashed worker's claim expires "
        "after this and another worker takes the item.",
    )
    poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Queue polling interval when nothing wakes the workers (other processes' messages, "
        "retries coming due).",
    )
    claim_batch: int = Field(default=50, ge=1, description="Queue items a worker claims at once.")
    retention_days: float | None = Field(
        default=None,
        description="Default retention of completed messages, in days, for channels that set none "
        "(None keeps them forever). Example: CONDUIT_MESSAGING_RETENTION_DAYS=30",
    )
