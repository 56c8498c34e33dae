"""Settings of the MLLP listener and sender (``CONDUIT_MLLP_*``, YAML ``mllp:``).

Which ports are opened comes from the channel files (``source: url: mllp://HOST:PORT``, see
engine/messaging/channels.py); ``CONDUIT_MLLP_HOST`` / ``CONDUIT_MLLP_PORT`` move the default channel.
The settings here tune every MLLP connection.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from engine.settings import SectionSettings

__all__ = ["MllpSettings"]


class MllpSettings(SectionSettings):
    yaml_section = "mllp"
    model_config = SettingsConfigDict(env_prefix="CONDUIT_MLLP_", extra="ignore")

    max_connections: int = Field(
        default=512,
        ge=1,
        description="Most simultaneous connections per MLLP source; more are closed at once (the sender "
        "retries). Example: CONDUIT_MLLP_MAX_CONNECTIONS=2000",
    )
    tls_handshake_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a TLS client has to finish its handshake."
    )
    stop_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="On shutdown, seconds given to messages being stored to get their ACK before the "
        "connections are closed (an unanswered sender resends; duplicates are detected).",
    )
