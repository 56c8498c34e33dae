"""HL7 v2 escape sequences (HL7 v2.5 chapter 2.7): decoding on read, encoding on write.

``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` stand for the delimiters, ``\\Xhh..\\`` for raw bytes, ``\\.br\\`` for a line
break; ``\\H\\ \\N\\`` (highlighting) and other formatting commands carry no text and are dropped. An
escape that is not terminated or not known is kept literally: a receiver must not lose data because a
sender escaped badly (the corpus has such a Z segment).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Delimiters", "DEFAULT_DELIMITERS", "unescape", "escape"]


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"  # MSH-1
    component: str = "^"  # MSH-2.1
    repetition: str = "~"  # MSH-2.2
    escape: str = "\\"  # MSH-2.3
    subcomponent: str = "&"  # MSH-2.4
    truncation: str = ""  # MSH-2.5 (v2.7+), e.g. '#'

    @classmethod
    def from_msh(cls, field_separator: str, encoding_characters: str) -> Delimiters:
        enc = encoding_characters
        return cls(
            field=field_separator,
            component=enc[0] if len(enc) > 0 else "^",
            repetition=enc[1] if len(enc) > 1 else "~",
            escape=enc[2] if len(enc) > 2 else "\\",
            subcomponent=enc[3] if len(enc) > 3 else "&",
            truncation=enc[4] if len(enc) > 4 else "",
        )

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_DELIMITERS = Delimiters()

# formatting commands of FT (2.7.6) that carry no character: dropped from plain text
_DROPPED = {"H", "N"}


def _hex(body: str) -> str | None:
    try:
        data = bytes.fromhex(body)
    except ValueError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def unescape(value: str, d: Delimiters = DEFAULT_DELIMITERS) -> str:
    """Decode the escape sequences in one leaf value (component or subcomponent)."""
    esc = d.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            j = value.find(esc, i)
            if j < 0:
                out.append(value[i:])
                break
            out.append(value[i:j])
            i = j
            continue
        end = value.find(esc, i + 1)
        if end < 0:  # unterminated: keep literally
            out.append(value[i:])
            break
        body = value[i + 1 : end]
        decoded: str | None
        if body == "F":
            decoded = d.field
        elif body == "S":
            decoded = d.component
        elif body == "T":
            decoded = d.subcomponent
        elif body == "R":
            decoded = d.repetition
        elif body == "E":
            decoded = d.escape
        elif body == "P" and d.truncation:
            decoded = d.truncation
        elif body == ".br":
            decoded = "\n"
        elif body in _DROPPED or body.startswith((".sp", ".in", ".ti", ".sk", ".ce", ".fi", ".nf")):
            decoded = "\n" if body.startswith(".sp") else ""
        elif body[:1] == "X" and len(body) > 1 and len(body) % 2 == 1:
            decoded = _hex(body[1:])
        elif body[:1] in ("C", "M", "Z") and len(body) > 1:
            decoded = ""  # character-set switches and locally defined escapes: no text of their own
        else:
            decoded = None
        if decoded is None:  # unknown escape: keep it as sent rather than lose characters
            out.append(value[i : end + 1])
        else:
            out.append(decoded)
        i = end + 1
    return "".join(out)


def escape(value: str, d: Delimiters = DEFAULT_DELIMITERS) -> str:
    """Escape delimiters in text for one leaf value; line breaks become ``\\.br\\``."""
    e = d.escape
    out = value.replace(e, f"{e}E{e}")
    out = out.replace(d.field, f"{e}F{e}").replace(d.component, f"{e}S{e}")
    out = out.replace(d.subcomponent, f"{e}T{e}").replace(d.repetition, f"{e}R{e}")
    if d.truncation:
        out = out.replace(d.truncation, f"{e}P{e}")
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{e}.br{e}")
