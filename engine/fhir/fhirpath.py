"""The small FHIRPath subset that the R4 SearchParameter expressions need for index extraction.

Supported (FHIRPath N1, http://hl7.org/fhirpath/N1): member paths (``Patient.name.given``) over R4 JSON with
choice types (``Observation.value`` finds ``valueQuantity``, ``valueString``...), the ``|`` union, the
``=``/``!=`` equality, ``and``/``or``, the type operators ``is``/``as``, string/number/boolean literals and
the functions ``where()``, ``exists()``, ``empty()``, ``not()``, ``first()``, ``ofType()``, ``as()``,
``resolve()`` (a reference resolves to its target *type* only — enough for ``where(resolve() is Patient)``)
and ``extension(url)``. Anything else raises :class:`FHIRPathError` at compile time, so a caller can skip an
expression it cannot evaluate instead of indexing wrong values.

Compile once, evaluate many times::

    expr = compile_expression("Observation.value.ofType(Quantity)")
    for node in expr.evaluate(resource):
        node.value, node.type   # the JSON value and its FHIR type when known ("Quantity")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = ["FHIRPathError", "Node", "Expression", "compile_expression"]


class FHIRPathError(ValueError):
    """An expression outside the supported subset, or malformed."""


class Node(NamedTuple):
    """One item of a FHIRPath collection: a JSON value and its FHIR type name when known."""

    value: Any
    type: str | None = None


Collection = list[Node]
_ABSENT = object()
Evaluator = Callable[[Collection, Node], Collection]  # (focus, root) -> result

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>!=|[.()|=,])|(?P<id>[A-Za-z_$][\w$]*)"
    r"|`(?P<qid>[^`]+)`)"
)
_PRIMITIVE_TYPES = {
    "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary", "instant", "date",
    "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt", "positiveInt", "uuid",
}  # fmt: skip


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FHIRPathError(f"unexpected character at {pos} in {text!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "qid":
            kind = "id"
        tokens.append((kind, value))
    return tokens


class _Parser:
    """Recursive descent in FHIRPath precedence order: or < and < equality < union < type ops < path."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise FHIRPathError(f"expected {value or 'more'} in {self.text!r}")
        self.i += 1
        return tok

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == value and tok[0] in ("op", "id")

    def parse(self) -> Evaluator:
        ev = self.or_expr()
        if self.peek() is not None:
            raise FHIRPathError(f"unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return ev

    def or_expr(self) -> Evaluator:
        left = self.and_expr()
        while self.at("or"):
            self.take()
            left = _logical(left, self.and_expr(), any)
        return left

    def and_expr(self) -> Evaluator:
        left = self.equality()
        while self.at("and"):
            self.take()
            left = _logical(left, self.equality(), all)
        return left

    def equality(self) -> Evaluator:
        left = self.union()
        while self.at("=") or self.at("!="):
            op = self.take()[1]
            left = _equality(left, self.union(), negate=op == "!=")
        return left

    def union(self) -> Evaluator:
        left = self.type_expr()
        while self.at("|"):
            self.take()
            left = _union(left, self.type_expr())
        return left

    def type_expr(self) -> Evaluator:
        left = self.path()
        while self.at("is") or self.at("as"):
            op = self.take()[1]
            type_name = self.type_name()
            left = _then(left, _is_type(type_name) if op == "is" else _of_type(type_name))
        return left

    def type_name(self) -> str:
        kind, name = self.take()
        if kind != "id":
            raise FHIRPathError(f"expected a type name in {self.text!r}")
        if self.at(".") and self.peek(1) and self.peek(1)[0] == "id":  # type: ignore[index]
            self.take()  # FHIR.Quantity / System.String
            name = self.take()[1]
        return name

    def path(self) -> Evaluator:
        ev = self.term()
        while self.at("."):
            self.take()
            ev = _then(ev, self.invocation())
        return ev

    def term(self) -> Evaluator:
        tok = self.peek()
        if tok is None:
            raise FHIRPathError(f"unexpected end of {self.text!r}")
        kind, value = tok
        if kind == "str":
            self.take()
            literal = Node(re.sub(r"\\(.)", r"\1", value[1:-1]), "string")
            return lambda focus, root: [literal]
        if kind == "num":
            self.take()
            number = Node(
                float(value) if "." in value else int(value), "decimal" if "." in value else "integer"
            )
            return lambda focus, root: [number]
        if value == "(":
            self.take()
            inner = self.or_expr()
            self.take(")")
            return inner
        if kind == "id" and value in ("true", "false"):
            self.take()
            flag = Node(value == "true", "boolean")
            return lambda focus, root: [flag]
        if kind == "id" and value[:1].isupper() and not (self.peek(1) and self.peek(1)[1] == "("):  # type: ignore[index]
            self.take()
            return _root_type(value)
        return self.invocation()

    def invocation(self) -> Evaluator:
        kind, name = self.take()
        if kind != "id":
            raise FHIRPathError(f"expected a name in {self.text!r}")
        if name == "$this":
            return lambda focus, root: focus
        if not self.at("("):
            return _member(name)
        self.take("(")
        args: list[Evaluator] = []
        raw_args: list[str] = []
        while not self.at(")"):
            start = self.i
            args.append(self.or_expr())
            raw_args.append(" ".join(t[1] for t in self.tokens[start : self.i]))
            if self.at(","):
                self.take()
        self.take(")")
        return _function(name, args, raw_args, self.text)


def _root_type(name: str) -> Evaluator:
    """A leading type name (``Patient.name``) selects the root when the resource has that type."""

    def ev(focus: Collection, root: Node) -> Collection:
        if name in ("Resource", "DomainResource") or (
            isinstance(root.value, dict) and root.value.get("resourceType") == name
        ):
            return [root]
        return []

    return ev


def _children(node: Node, name: str) -> Collection:
    value = node.value
    if type(value) is not dict:
        return []
    child = value.get(name, _ABSENT)
    if child is not _ABSENT:
        if type(child) is list:
            return [Node(item) for item in child if item is not None]
        return [] if child is None else [Node(child)]
    # choice type: value[x] is stored as valueQuantity, valueString...
    out: Collection = []
    size = len(name)
    for key, child in value.items():
        if key.startswith(name) and len(key) > size and key[size].isupper():
            type_name = key[len(name) :]
            if type_name[0].lower() + type_name[1:] in _PRIMITIVE_TYPES:
                type_name = type_name[0].lower() + type_name[1:]
            items = child if isinstance(child, list) else [child]
            out.extend(Node(item, type_name) for item in items if item is not None)
    return out


def _member(name: str) -> Evaluator:
    def ev(focus: Collection, root: Node) -> Collection:
        out: Collection = []
        for node in focus:
            out.extend(_children(node, name))
        return out

    return ev


def _then(first: Evaluator, second: Evaluator) -> Evaluator:
    return lambda focus, root: second(first(focus, root), root)


def _union(left: Evaluator, right: Evaluator) -> Evaluator:
    def ev(focus: Collection, root: Node) -> Collection:
        out = left(focus, root)
        seen = {id(n.value) for n in out}
        out.extend(n for n in right(focus, root) if id(n.value) not in seen)
        return out

    return ev


def _truth(collection: Collection) -> bool | None:
    """FHIRPath singleton evaluation of a collection as a Boolean (empty → None)."""
    if not collection:
        return None
    if len(collection) == 1 and isinstance(collection[0].value, bool):
        return collection[0].value
    return True


def _logical(left: Evaluator, right: Evaluator, combine: Callable[[list[bool]], bool]) -> Evaluator:
    def ev(focus: Collection, root: Node) -> Collection:
        a, b = _truth(left(focus, root)), _truth(right(focus, root))
        if a is None or b is None:
            # three-valued logic reduced to what index extraction needs: unknown stays empty
            if combine is all and (a is False or b is False):
                return [Node(False, "boolean")]
            if combine is any and (a is True or b is True):
                return [Node(True, "boolean")]
            return []
        return [Node(combine([a, b]), "boolean")]

    return ev


def _equality(left: Evaluator, right: Evaluator, *, negate: bool) -> Evaluator:
    def ev(focus: Collection, root: Node) -> Collection:
        a, b = left(focus, root), right(focus, root)
        if not a or not b:
            return []
        equal = len(a) == len(b) and all(x.value == y.value for x, y in zip(a, b, strict=True))
        return [Node(equal != negate, "boolean")]

    return ev


def _type_matches(node: Node, type_name: str) -> bool:
    if node.type is None:
        # Not a choice element: its type comes from the resource definition, which this subset does not
        # carry. Expressions only apply ofType()/as to choice elements, so an untyped node is let through.
        return True
    return node.type.lower() == type_name.lower()


def _of_type(type_name: str) -> Evaluator:
    return lambda focus, root: [n for n in focus if _type_matches(n, type_name)]


def _is_type(type_name: str) -> Evaluator:
    def ev(focus: Collection, root: Node) -> Collection:
        if len(focus) != 1:
            return []
        node = focus[0]
        return [Node(node.type is not None and node.type.lower() == type_name.lower(), "boolean")]

    return ev


def _reference_target_type(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    ref = value.get("reference")
    if isinstance(ref, str) and "/" in ref and not ref.startswith(("#", "urn:")):
        parts = ref.split("?", 1)[0].rstrip("/").split("/")
        # [base/]Type/id[/_history/v]
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return parts[-2]
    declared = value.get("type")
    return declared if isinstance(declared, str) else None


def _function(name: str, args: list[Evaluator], raw_args: list[str], text: str) -> Evaluator:
    def arity(n: int) -> None:
        if len(args) != n:
            raise FHIRPathError(f"{name}() takes {n} argument(s) in {text!r}")

    if name == "where":
        arity(1)
        (criteria,) = args
        return lambda focus, root: [n for n in focus if _truth(criteria([n], root)) is True]
    if name == "exists":
        if args:
            (criteria,) = args
            return lambda focus, root: [
                Node(any(_truth(criteria([n], root)) is True for n in focus), "boolean")
            ]
        return lambda focus, root: [Node(bool(focus), "boolean")]
    if name == "empty":
        arity(0)
        return lambda focus, root: [Node(not focus, "boolean")]
    if name == "not":
        arity(0)

        def negate(focus: Collection, root: Node) -> Collection:
            truth = _truth(focus)
            return [] if truth is None else [Node(not truth, "boolean")]

        return negate
    if name == "first":
        arity(0)
        return lambda focus, root: focus[:1]
    if name in ("ofType", "as"):
        arity(1)
        return _of_type(raw_args[0].split(".")[-1])
    if name == "is":
        arity(1)
        return _is_type(raw_args[0].split(".")[-1])
    if name == "resolve":
        arity(0)
        # The store resolves nothing while indexing; the target's type is all `resolve() is X` needs.
        return lambda focus, root: [Node(n.value, _reference_target_type(n.value)) for n in focus]
    if name == "extension":
        arity(1)
        (url_ev,) = args

        def extension(focus: Collection, root: Node) -> Collection:
            urls = {n.value for n in url_ev(focus, root)}
            return [e for e in _member("extension")(focus, root) if e.value.get("url") in urls]

        return extension
    raise FHIRPathError(f"function {name}() is not supported (in {text!r})")


class Expression:
    """A compiled FHIRPath expression."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._ev = _Parser(text).parse()

    def evaluate(self, resource: dict[str, Any]) -> list[Node]:
        root = Node(resource, resource.get("resourceType"))
        return self._ev([root], root)

    def values(self, resource: dict[str, Any]) -> list[Any]:
        return [n.value for n in self.evaluate(resource)]

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


@lru_cache(maxsize=4096)
def compile_expression(text: str) -> Expression:
    """Parse ``text`` once (cached); raises FHIRPathError outside the supported subset."""
    return Expression(text)
