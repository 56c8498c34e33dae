"""Load YAML keeping the line of every value, so a channel error can say ``file:line: field: problem``.

PyYAML's composer gives nodes with ``start_mark``; we turn the node tree into plain Python values and
record the 1-based line of each path (``("destinations", 0, "url")``) in a side table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Located", "load_located", "YamlSyntaxError"]

PathKey = tuple[str | int, ...]


class YamlSyntaxError(ValueError):
    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.line = line


@dataclass
class Located:
    """A YAML document as plain values plus the line of every path in it."""

    value: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line(self, path: PathKey) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def _convert(node: yaml.Node, path: PathKey, lines: dict[PathKey, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader.construct_scalar(_LOADER, key_node)  # type: ignore[arg-type]
            out[key] = _convert(value_node, (*path, str(key)), lines)
            lines[(*path, str(key))] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), lines) for i, item in enumerate(node.value)]
    return _LOADER.construct_object(node, deep=True)


class _Loader(yaml.SafeLoader):
    pass


_LOADER = _Loader("")


def load_located(path: Path) -> Located:
    """Parse one YAML file (a single document). Raises YamlSyntaxError with the line on bad syntax."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlSyntaxError(str(exc.problem or exc), mark.line + 1 if mark else None) from exc
    if node is None:
        return Located(None, {(): 1})
    lines: dict[PathKey, int] = {}
    value = _convert(node, (), lines)
    return Located(value, lines)
