"""A fast HL7 v2 tokenizer: segments → fields → repetitions → components → subcomponents.

Splitting is lazy: a segment keeps its raw fields and splits one only when it is read (most fields of a
message are never looked at). Leaf values are escape-decoded on read. The HL7 explicit null ``""`` (HL7 v2.5
2.5.3: "delete the value") is returned as :data:`NULL`, which is falsy like an empty value but distinct
from it (``value is NULL``).

    msg = parse(raw)
    msg.segments[0].name             # 'MSH'
    msg.first("PID").get(5, comp=2)  # PID-5.2, first repetition
    msg.tree                         # segments grouped by the message structure (engine.hl7v2.structure)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidInput
from engine.hl7v2.escape import DEFAULT_DELIMITERS, Delimiters, unescape

if TYPE_CHECKING:
    from engine.hl7v2.structure import Group

__all__ = ["NULL", "Message", "Segment", "Repetition", "parse", "decode_bytes", "is_null"]


class _Null(str):
    """The HL7 explicit null ``""``: falsy, but ``is NULL`` tells it from an empty value."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NULL"


NULL = _Null('""')


def is_null(value: object) -> bool:
    return value is NULL


#: a repetition: components, each a sequence of raw (still escaped) subcomponents. Tuples where the
#: tokenizer makes them: they are cheaper to build than lists, and the garbage collector stops tracking a
#: tuple of strings once it has seen it, so a message's split fields do not weigh on later collections.
Repetition = Sequence[Sequence[str]]

_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")


def _msh18(raw: bytes) -> str:
    """MSH-18 read from the raw bytes (the header is ASCII-compatible in every Table 0211 set)."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 4:
        return ""
    end = min(i for i in (raw.find(b"\r", start), raw.find(b"\n", start), len(raw)) if i >= 0)
    fields = raw[start:end].split(raw[start + 3 : start + 4])
    # fields[0] is "MSH" and fields[1] MSH-2, so MSH-n is fields[n - 1]
    return fields[17].split(b"~")[0].decode("ascii", "replace") if len(fields) > 17 else ""


def decode_bytes(raw: bytes, charset: str | None = None) -> str:
    """Bytes to text: UTF-8 when valid (the usual case, and a superset of ASCII), else the character set
    MSH-18 names (engine.hl7v2.charset, Table 0211), else ISO 8859-1 (every byte is a character)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from engine.hl7v2.charset import codec_for

    codec = codec_for(charset or _msh18(raw), default="iso8859_1") or "iso8859_1"
    if codec.replace("-", "").replace("_", "") == "utf8":
        codec = "iso8859_1"  # declared UTF-8 but is not: keep every byte rather than fail
    return raw.decode(codec, errors="replace")


class Segment:
    """One segment. ``fields[n]`` is the raw text of SEG-n (``fields[0]`` is the segment name); for MSH,
    ``fields[1]`` is the field separator and ``fields[2]`` the encoding characters, as the standard
    numbers them."""

    __slots__ = ("name", "fields", "delimiters", "index", "occurrence", "group", "_parsed", "_values")

    def __init__(self, name: str, fields: list[str], delimiters: Delimiters, index: int, occurrence: int):
        self.name = name
        self.fields = fields
        self.delimiters = delimiters
        self.index = index  # position in the message, 0-based
        self.occurrence = occurrence  # 1-based count of this segment name so far (OBX[3])
        self.group: Group | None = None  # the structure group holding it, once the message is grouped
        self._parsed: dict[int, Sequence[Repetition]] = {}
        self._values: dict[int, list[Any]] = {}  # engine.hl7v2.paths: compiled path -> values

    def __repr__(self) -> str:
        return f"<Segment {self.location}>"

    @property
    def location(self) -> str:
        """``OBX[3]``: the segment as error messages name it."""
        return f"{self.name}[{self.occurrence}]"

    def raw(self, n: int) -> str:
        """The raw text of field n ('' when absent)."""
        return self.fields[n] if n < len(self.fields) else ""

    def field(self, n: int) -> Sequence[Repetition]:
        """Field n split into repetitions → components → subcomponents (raw, still escaped)."""
        parsed = self._parsed.get(n)
        if parsed is not None:
            return parsed
        raw = self.fields[n] if n < len(self.fields) else ""
        parsed: Sequence[Repetition]
        if not raw:
            parsed = ()
        elif self.name == "MSH" and n <= 2:  # separators are data, not structure
            parsed = (((raw,),),)
        else:
            d = self.delimiters
            if d.component not in raw and d.repetition not in raw and d.subcomponent not in raw:
                parsed = (((raw,),),)  # most fields: one plain value
            elif d.subcomponent not in raw:  # the common case: no subcomponents to split
                parsed = [[(comp,) for comp in rep.split(d.component)] for rep in raw.split(d.repetition)]
            else:
                parsed = [
                    [comp.split(d.subcomponent) for comp in rep.split(d.component)]
                    for rep in raw.split(d.repetition)
                ]
        self._parsed[n] = parsed
        return parsed

    def repetitions(self, n: int) -> Sequence[Repetition]:
        return self.field(n)

    def get(self, n: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        """SEG-n.comp.sub of repetition ``rep`` (all 1-based), escape-decoded; '' when absent,
        :data:`NULL` for an explicit null."""
        reps = self.field(n)
        if rep > len(reps):
            return ""
        comps = reps[rep - 1]
        if comp > len(comps):
            return ""
        subs = comps[comp - 1]
        if sub > len(subs):
            return ""
        return leaf(subs[sub - 1], self.delimiters)

    def text(self, n: int) -> str:
        """The whole field decoded as text (for ST/TX/FT fields): first repetition, components re-joined."""
        reps = self.field(n)
        if not reps:
            return ""
        if len(reps[0]) == 1 and len(reps[0][0]) == 1:
            return leaf(reps[0][0][0], self.delimiters)
        d = self.delimiters
        return d.component.join(d.subcomponent.join(unescape(s, d) for s in comp) for comp in reps[0]).strip()


def leaf(value: str, d: Delimiters = DEFAULT_DELIMITERS) -> str:
    """Decode one raw leaf: explicit null, escapes, surrounding blanks."""
    if not value:
        return ""
    if value == '""':
        return NULL
    if d.escape in value:
        value = unescape(value, d)
    return value.strip()


class Message:
    """A tokenized HL7 v2 message."""

    __slots__ = ("text", "segments", "delimiters", "__dict__")

    def __init__(self, text: str, segments: list[Segment], delimiters: Delimiters):
        self.text = text
        self.segments = segments
        self.delimiters = delimiters

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @property
    def message_type(self) -> str:
        return self.msh.get(9, comp=1)

    @property
    def trigger_event(self) -> str:
        return self.msh.get(9, comp=2)

    @property
    def structure_id(self) -> str:
        return self.msh.get(9, comp=3)

    @property
    def version(self) -> str:
        return self.msh.get(12, comp=1)

    @property
    def control_id(self) -> str:
        return self.msh.get(10)

    @cached_property
    def tree(self) -> Group:
        """Segments grouped by the message structure of MSH-9/MSH-12 (see engine.hl7v2.structure)."""
        from engine.hl7v2.structure import group_message

        return group_message(self)

    def release(self) -> None:
        """Forget the grouping and the values read through it, once the message is done with.

        Segments and their groups point at each other, and a segment's remembered values point back at
        the segment: reference cycles, which only the cyclic garbage collector frees. Left to it, each
        mapped message's few thousand objects survive into the older generations and make the full
        collections (which also scan every imported model class) run often. Broken here, reference
        counting frees the message as soon as its last user drops it. Reading the message again after
        this works: the tree is rebuilt when asked."""
        tree = self.__dict__.pop("tree", None)
        for seg in self.segments:
            seg.group = None
            seg._values.clear()
        stack = [tree] if tree is not None else []
        while stack:
            group = stack.pop()
            group.parent = None
            stack.extend(child for child in group.children if not isinstance(child, Segment))


def parse(data: bytes | str, *, charset: str | None = None) -> Message:
    """Tokenize one message. Raises InvalidInput (location ``MSH``) when there is no usable MSH."""
    text = decode_bytes(data, charset) if isinstance(data, bytes | bytearray) else data
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _SEGMENT_SPLIT.split(text)
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start >= len(lines) or not lines[start].startswith("MSH") or len(lines[start]) < 8:
        raise InvalidInput("not an HL7 v2 message: it must start with an MSH segment", location="MSH")
    head = lines[start]
    fs = head[3]
    enc_end = head.find(fs, 4)
    enc = head[4:enc_end] if enc_end > 0 else head[4:]
    if not enc or len(enc) < 4 or fs in enc or fs.isalnum():
        raise InvalidInput("MSH-1/MSH-2: invalid field separator or encoding characters", location="MSH-2")
    d = Delimiters.from_msh(fs, enc)
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for line in lines[start:]:
        line = line.rstrip()
        if not line:
            continue
        parts = line.split(fs)
        name = parts[0].strip()
        if not _SEGMENT_NAME.match(name):
            raise InvalidInput(
                f"segment {len(segments) + 1}: invalid segment name {name[:10]!r}",
                location=f"segment {len(segments) + 1}",
            )
        if name == "MSH":
            parts.insert(1, fs)
        occurrence = counts.get(name, 0) + 1
        counts[name] = occurrence
        segments.append(Segment(name, parts, d, len(segments), occurrence))
    return Message(text, segments, d)
