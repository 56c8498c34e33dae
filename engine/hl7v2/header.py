"""The message header (MSH) of an HL7 v2 message, read without parsing the body.

The MLLP path needs MSH-3/4/9/10/12/15/16/18 for routing, duplicate detection and the ACK; parsing the whole
message (hl7apy costs ~47 ms for a 25-segment ORU^R01) does not belong on that path. ``parse_header`` is
implemented by the HL7 v2 codec (MLLP work); this dataclass is the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MessageHeader"]


@dataclass(frozen=True)
class MessageHeader:
    field_separator: str = "|"  # MSH-1
    encoding_characters: str = "^~\\&"  # MSH-2 (component, repetition, escape, subcomponent[, truncation])
    sending_application: str = ""  # MSH-3 (whole field, components joined by the component separator)
    sending_facility: str = ""  # MSH-4
    receiving_application: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    message_datetime: str = ""  # MSH-7 (as sent)
    message_type: str = ""  # MSH-9.1, e.g. ORU
    trigger_event: str = ""  # MSH-9.2, e.g. R01
    message_structure: str = ""  # MSH-9.3, e.g. ORU_R01
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11
    version: str = ""  # MSH-12, e.g. 2.5.1
    accept_ack_type: str = ""  # MSH-15 (Table 0155: AL, NE, ER, SU); empty = original mode
    application_ack_type: str = ""  # MSH-16 (Table 0155)
    character_set: str = ""  # MSH-18, e.g. UNICODE UTF-8, 8859/1

    @property
    def enhanced_mode(self) -> bool:
        """Enhanced acknowledgement mode applies when MSH-15 or MSH-16 is valued (HL7 v2.5 2.9.3)."""
        return bool(self.accept_ack_type or self.application_ack_type)
