"""MSH-18 character set (HL7 Table 0211) to a Python codec name.

The header segment is always ASCII-compatible in the 8-bit sets, so the MSH can be located before MSH-18 is
known; the rest of the message is then decoded with the codec named here.
"""

from __future__ import annotations

import codecs

__all__ = ["TABLE_0211", "codec_for", "hl7_name_for"]

#: HL7 Table 0211 (Alternate character sets) -> Python codec
TABLE_0211: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "iso8859_1",
    "8859/2": "iso8859_2",
    "8859/3": "iso8859_3",
    "8859/4": "iso8859_4",
    "8859/5": "iso8859_5",
    "8859/6": "iso8859_6",
    "8859/7": "iso8859_7",
    "8859/8": "iso8859_8",
    "8859/9": "iso8859_9",
    "8859/15": "iso8859_15",
    "ISO IR6": "ascii",
    "ISO IR14": "shift_jis",  # JIS X 0201; Shift JIS is its superset
    "ISO IR87": "iso2022_jp",  # JIS X 0208 (escape-sequence switched)
    "ISO IR159": "iso2022_jp_1",  # JIS X 0212
    "ISO IR100": "iso8859_1",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "CNS 11643-1992": "big5",  # no Python codec for CNS 11643 planes; Big5 covers the common range
    "BIG-5": "big5",
    "UNICODE": "utf-8",  # pre-2.5 label for "some Unicode encoding"; UTF-8 is the only one MLLP carries
    "UNICODE UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
}

_REVERSE = {"ascii": "ASCII", "iso8859-1": "8859/1", "latin-1": "8859/1", "utf-8": "UNICODE UTF-8"}


def codec_for(msh18: str, default: str = "utf-8") -> str | None:
    """The Python codec for an MSH-18 value, ``default`` when MSH-18 is empty, None when unknown.

    Labels outside Table 0211 that Python knows (``UTF-8``, ``latin-1``, ``windows-1252``) are accepted,
    because senders use them in the wild and refusing them would help nobody.
    """
    value = msh18.strip()
    if not value:
        return default
    known = TABLE_0211.get(value.upper())
    if known:
        return known
    try:
        info = codecs.lookup(value)
    except (LookupError, ValueError):  # ValueError: a label with a NUL in it (a mangled MSH-18)
        return None
    # Python's codec registry also names codecs that are no character set: bytes-to-bytes ones (hex,
    # zlib, base64) and "undefined", which refuses every text (MSH-18 "UNDEFINED" found by hypothesis)
    if not getattr(info, "_is_text_encoding", True) or info.name == "undefined":
        return None
    return info.name


def hl7_name_for(codec: str) -> str:
    """The Table 0211 label for a Python codec (for MSH-18 of messages Conduit writes)."""
    name = codecs.lookup(codec).name
    return _REVERSE.get(name, "UNICODE UTF-8" if name == "utf-8" else name.upper())
