"""Actions of the event table: what a trigger event, ORC-1, OBR-25 or OBX-11 does to a resource.

=====================  ===================================================================================
``update``             (default) conditional update: the resource is created or replaced
``create``             conditional create: made only when no resource has this identity (placeholders:
                       a practitioner known only by an XCN must not overwrite a richer record)
``skip``               no entry for this resource
``cancel``             status → the type's cancelled code (Observation/DiagnosticReport/Encounter/Appointment
                       ``cancelled``, ServiceRequest ``revoked``, Immunization ``entered-in-error``)
``finish``             Encounter.status = finished (A03), the period end from EVN-2/PV1-45 kept
``correct``            status → corrected (a new version of the same resource: same identity)
``enter-in-error``     status → entered-in-error
``merge``              ADT^A40: the survivor keeps the merged patient's identifiers (use old) and
                       ``link.type = replaces``; the merged Patient becomes ``active = false`` with
                       ``link.type = replaced-by``. Replaying is harmless; a reversed merge is refused.
=====================  ===================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.hl7v2.paths import compile_path
from engine.mapping.converters import cx_identifier

if TYPE_CHECKING:
    from engine.mapping.interpreter import Instance
    from engine.mapping.spec import Ctx, EventRule

__all__ = ["ACTIONS"]

_CANCELLED = {
    "ServiceRequest": "revoked",
    "Immunization": "entered-in-error",
    "DocumentReference": "entered-in-error",
    "MedicationRequest": "cancelled",
}


def _update(inst: Instance, ctx: Ctx, rule: EventRule) -> None:
    return None


def _create(inst: Instance, ctx: Ctx, rule: EventRule) -> None:
    # the request becomes a conditional create once the identity is known (interpreter._identify)
    inst.create_only = True


def _skip(inst: Instance, ctx: Ctx, rule: EventRule) -> None:
    inst.skip = True


def _status(inst: Instance, code: str) -> None:
    inst.resource["status"] = code


def _cancel(inst: Instance, ctx: Ctx, rule: EventRule) -> None:
    _status(inst, _CANCELLED.get(inst.block.type, "cancelled"))


def _finish(inst: Instance, ctx: Ctx, rule: EventRule) -> None:
    _status(inst, "finished")


def _correct(inst: Instance, ctx: Ctx, rule: EventRule) -> None:
    _status(inst, "corrected")


def _error(inst: Instance, ctx: Ctx, rule: EventRule) -> None:
    _status(inst, "entered-in-error")


def _merge(inst: Instance, ctx: Ctx, rule: EventRule) -> None:
    """ADT^A40 (A39/A41/A42 alike): MRG-1 names the patients merged into this one (the survivor)."""
    if inst.block.type != "Patient":
        return
    from engine.mapping.interpreter import search_value

    state = ctx.state
    path = compile_path(str(rule.options.get("from", "MRG-1[*]")))
    survivor = inst.resource
    survivor["active"] = True
    merged_identifiers: list[dict[str, Any]] = []
    for value in path.values(ctx.scope):
        ident = cx_identifier(value, state.cx, {})
        if ident is not None:
            merged_identifiers.append(ident)
    if not merged_identifiers:
        state.warn("merge: MRG-1 names no patient identifier; nothing merged", f"MRG-1 ({rule.where})")
        return
    own = survivor.setdefault("identifier", [])
    for ident in merged_identifiers:
        if ident in own:
            from engine.errors import Issue, MappingError

            raise MappingError(
                "merge: the surviving and the merged patient are the same identifier",
                issues=[Issue("PID-3 and MRG-1 name the same patient", location=f"MRG-1 ({rule.where})")],
            )
    for ident in merged_identifiers:
        system, value = ident["system"], ident["value"]
        # the merged record: matched only while it is not the active survivor (active:not=true), so a
        # replay finds it again instead of the survivor that now also carries this identifier as "old"
        url = f"Patient?identifier={search_value(system)}|{search_value(value)}&active:not=true"
        full_url = "urn:uuid:" + state.derived_uuid(url)
        merged = {
            "resourceType": "Patient",
            "identifier": [ident],
            "active": False,
            "link": [{"other": {"reference": ""}, "type": "replaced-by"}],
        }
        state.extra_entries.append(
            {
                "fullUrl": full_url,
                "resource": merged,
                "request": {"method": "PUT", "url": url},
                "_survivor": inst,
            }
        )
        own.append({**ident, "use": "old"})
        survivor.setdefault("link", []).append({"other": {"reference": full_url}, "type": "replaces"})


ACTIONS: dict[str, Callable[[Instance, Ctx, EventRule], None]] = {
    "update": _update,
    "create": _create,
    "skip": _skip,
    "cancel": _cancel,
    "finish": _finish,
    "correct": _correct,
    "enter-in-error": _error,
    "merge": _merge,
}
