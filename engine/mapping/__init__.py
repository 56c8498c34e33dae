"""The mapping layer: HL7 v2 messages to FHIR R4 transaction Bundles (and FHIR back to HL7 v2), driven
by declarative YAML mapping files (``mappings/hl7v2/``; language reference in engine.mapping.spec).

The contract with the channel pipeline::

    result = map_message(raw)              # picks the mapping by MSH-9/MSH-12/MSH-3/MSH-4
    result.bundle                          # a transaction Bundle: conditional PUTs, urn:uuid: fullUrls
    result.mapping, result.version         # which mapping (and its version) made it
    result.issues                          # warnings (values left out, derived identifiers)

It raises :class:`engine.errors.MappingError` whose issues locate the problem in the message and in the
mapping file, e.g. ``OBX[3]-5 (mappings/hl7v2/oru_r01.yaml:42)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidInput, Issue, MappingError

__all__ = ["MappingResult", "map_message", "render_message"]


@dataclass
class MappingResult:
    bundle: dict[str, Any]
    mapping: str
    version: str
    issues: list[Issue] = field(default_factory=list)
    message_type: str = ""
    """MSH-9 as ``ORU^R01``."""
    unused: list[str] = field(default_factory=list)
    """Segments and fields the mapping did not read (only when asked: ``track=True``)."""


def map_message(
    raw: bytes | str, *, mapping: str | None = None, registry: Any = None, track: bool = False
) -> MappingResult:
    """Map one HL7 v2 message (no MLLP framing, not a batch) into a FHIR R4 transaction Bundle."""
    from engine.hl7v2.message import parse
    from engine.mapping.interpreter import run
    from engine.mapping.registry import default_registry

    reg = registry or default_registry()
    try:
        message = parse(raw)
    except InvalidInput as exc:
        raise MappingError(exc.message, issues=exc.issues) from None
    try:
        chosen = reg.get(mapping) if mapping else reg.select(message)
        output = run(chosen, message, track=track)
        unused: list[str] = []
        if track:
            from engine.mapping.validate import unused_fields

            unused = unused_fields(message, output.used)
        message_type = f"{message.message_type}^{message.trigger_event}"
    finally:
        message.release()  # freed by reference counting now, not by a garbage collection later
    issues = list(output.issues)
    if reg.full_validation:
        from engine.mapping.validate import validate_bundle

        errors = validate_bundle(output.bundle)
        if errors:
            raise MappingError(
                f"{chosen.name}: mapped resources are not valid FHIR R4: {errors[0].message}", issues=errors
            )
    return MappingResult(
        bundle=output.bundle,
        mapping=chosen.name,
        version=chosen.version,
        issues=issues,
        message_type=message_type,
        unused=unused,
    )


def render_message(resources: Any, *, mapping: str, registry: Any = None) -> bytes:
    """FHIR → HL7 v2: render resources (a list, or a Bundle) with an outbound mapping into one message,
    validated against its message structure with hl7apy before it is returned."""
    from engine.mapping.outbound import render
    from engine.mapping.registry import default_registry

    return render(resources, mapping=mapping, registry=registry or default_registry())
