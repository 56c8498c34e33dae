"""Settings of the mapping layer (``CONDUIT_MAPPING_*`` or the ``mapping:`` section of conduit.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from engine.settings import SectionSettings

__all__ = ["MappingSettings", "SHIPPED_DIR"]

#: the mappings shipped with Conduit (``mappings/`` at the top of the source tree)
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "mappings"


class MappingSettings(SectionSettings):
    yaml_section: ClassVar[str | None] = "mapping"
    model_config = SettingsConfigDict(env_prefix="CONDUIT_MAPPING_", extra="ignore")

    dirs: list[Path] = Field(
        default_factory=list,
        description="Site mapping directories (each like mappings/: hl7v2/, tables/, conceptmaps/), read "
        "after the shipped ones so a site mapping of the same name replaces the shipped one. "
        "Example: CONDUIT_MAPPING_DIRS='[\"/etc/conduit/mappings\"]'",
    )
    timezone: str = Field(
        default="UTC",
        description="Time zone for HL7 v2 times sent without an offset, unless a mapping says timezone:. "
        "Example: CONDUIT_MAPPING_TIMEZONE=Europe/Paris",
    )
    full_validation: bool = Field(
        default=True,
        description="Validate every mapped resource against FHIR R4 on the message path (engine.fhir."
        "r4_validator, compiled from the official R4 JSON schema: about 0.4 ms for a 27-resource ORU^R01 "
        "bundle); a message whose mapped resources are not valid R4 fails mapping with the located problems (its "
        "error stage; AE where the channel acknowledges after transforming). "
        "Off: only the precompiled structural check (required elements, required-binding codes) runs; "
        "`conduit map test` always validates fully. Example: CONDUIT_MAPPING_FULL_VALIDATION=false",
    )
    function_modules: list[str] = Field(
        default_factory=list,
        description="Python modules that register named mapping functions (engine.mapping.functions), "
        "imported when mappings load. Example: CONDUIT_MAPPING_FUNCTION_MODULES='[\"acme.mapping\"]'",
    )
