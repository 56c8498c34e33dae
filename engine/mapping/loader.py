"""Reading mapping files: YAML with file:line on every mapping key, and ``extends:`` resolution.

Every dict read from a mapping file is a :class:`LocatedDict` that remembers where each of its keys was
written, so a problem found when the file loads — or when a message runs through it — names
``mappings/hl7v2/oru_r01.yaml:42``.

``extends: NAME`` starts from the named mapping and lays this file over it: dicts merge key by key
(``resources`` by block, a block's ``fields`` by element), lists and scalars replace, and ``null`` removes
an inherited key (``fields: {note: null}``). ``events`` rules are appended to the parent's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.errors import ConfigurationError

__all__ = ["LocatedDict", "load_yaml", "merge", "where"]


class LocatedDict(dict):  # type: ignore[type-arg]
    """A dict that knows the file and line of itself and of each of its keys."""

    __slots__ = ("file", "line", "lines")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.file = "?"
        self.line = 0
        self.lines: dict[Any, tuple[str, int]] = {}

    def where(self, key: Any = None) -> str:
        if key is not None and key in self.lines:
            file, line = self.lines[key]
            return f"{file}:{line}"
        return f"{self.file}:{self.line}"


class LocatedList(list):  # type: ignore[type-arg]
    __slots__ = ("file", "line")


def where(node: Any, key: Any = None, default: str = "?") -> str:
    if isinstance(node, LocatedDict):
        return node.where(key)
    if isinstance(node, LocatedList):
        return f"{node.file}:{node.line}"
    return default


def _loader(file: str) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LocatedDict:
        loader.flatten_mapping(node)
        out = LocatedDict()
        out.file, out.line = file, node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, list):
                key = tuple(key)
            if key in out:
                raise ConfigurationError(f"{file}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = loader.construct_object(value_node, deep=True)
            out.lines[key] = (file, key_node.start_mark.line + 1)
        return out

    def construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LocatedList:
        out = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
        out.file, out.line = file, node.start_mark.line + 1
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_sequence)
    return Loader


def load_yaml(path: Path, display: str | None = None) -> Any:
    name = display or str(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_loader(name))  # noqa: S506 - SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(f"{name}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None


def _copy(node: Any) -> Any:
    if isinstance(node, LocatedDict):
        out = LocatedDict((k, _copy(v)) for k, v in node.items())
        out.file, out.line, out.lines = node.file, node.line, dict(node.lines)
        return out
    return node


def merge(base: Any, over: Any, *, path: tuple[str, ...] = ()) -> Any:
    """``over`` laid over ``base`` (see the module docstring)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = _copy(base)
        if isinstance(over, LocatedDict) and isinstance(out, LocatedDict):
            out.file, out.line = over.file, over.line
        for key, value in over.items():
            if value is None:
                out.pop(key, None)
                continue
            if path == () and key == "events" and isinstance(out.get(key), list) and isinstance(value, list):
                merged = LocatedList(list(out[key]) + list(value))
                merged.file, merged.line = getattr(value, "file", "?"), getattr(value, "line", 0)
                out[key] = merged
            elif key in out and isinstance(out[key], dict) and isinstance(value, dict):
                out[key] = merge(out[key], value, path=path + (str(key),))
            else:
                out[key] = value
            if isinstance(out, LocatedDict) and isinstance(over, LocatedDict) and key in over.lines:
                out.lines[key] = over.lines[key]
        return out
    return over
