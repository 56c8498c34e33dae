"""Named Python functions for the rare site-specific step (no code inside YAML).

A site module registers a function under a name and a mapping calls it::

    from engine.mapping.functions import register

    @register("acme-specimen-id")
    def acme_specimen_id(ctx, barcode):   # ctx: engine.mapping.spec.Ctx; args: evaluated value specs
        return barcode.text().lstrip("0") or None

    # mapping file
    fields:
      accessionIdentifier: {function: acme-specimen-id, args: [SPM-2.1], as: EI}

Arguments arrive as lists of values (one list per ``args`` entry); the function returns a value, a list
of values, or None. Modules named in the ``mapping.function_modules`` setting are imported at load time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import ConfigurationError

__all__ = ["register", "lookup", "FUNCTIONS"]

FUNCTIONS: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in FUNCTIONS and FUNCTIONS[name] is not fn:
            raise ConfigurationError(f"mapping function {name!r} is registered twice")
        FUNCTIONS[name] = fn
        return fn

    return decorate


def lookup(name: str) -> Callable[..., Any]:
    try:
        return FUNCTIONS[name]
    except KeyError:
        known = ", ".join(sorted(FUNCTIONS)) or "none"
        raise ConfigurationError(f"unknown mapping function {name!r} (registered: {known})") from None


@register("text-lines")
def text_lines(ctx: Any, *values: list[Any]) -> str | None:
    """Join text values (TX/FT/ST OBX-5 lines of a report, NTE-3 comments) into one text, one per line."""
    lines: list[str] = []
    for group in values:
        for v in group:
            text = v.text() if hasattr(v, "text") else str(v)
            if text:
                lines.append(text)
    return "\n".join(lines) or None


@register("first-word")
def first_word(ctx: Any, values: list[Any]) -> str | None:
    """The first blank-separated word of a text (e.g. a code sent with its label in one field)."""
    for v in values:
        text = v.text() if hasattr(v, "text") else str(v)
        if text.split():
            return text.split()[0]
    return None


@register("text-attachment")
def text_attachment(ctx: Any, *values: list[Any]) -> dict[str, Any] | None:
    """Text lines (TX/FT OBX-5 of a document) as a UTF-8 text/plain Attachment."""
    import base64

    text = text_lines(ctx, *values)
    if not text:
        return None
    return {
        "contentType": "text/plain; charset=utf-8",
        "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
    }
