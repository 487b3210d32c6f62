"""OpenAI attribute filters: parsed and validated once (`parse_filters`, at the edge of a request) into a typed
value, then turned into a Milvus boolean expression once per attribute layout (`to_expression`).

Every key and value becomes a quoted, escaped literal, so no input can change the expression's
structure. `in`/`nin` expand to `==` disjunctions / `!=` conjunctions: Milvus Lite 3.x rejects `in` on
JSON paths and Lite 2.5 rejects `not`. On a chunk that lacks the key, `ne`/`nin` match on Lite 2.5 and Milvus
2.3.5 and not on Lite 3.x (Milvus' own semantics; no portable `exists`).
Invalid filters raise ValueError (HTTP 400) with a message naming the offending part.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llama_stack.providers.utils.vector_io.filters import parse_filter
from llama_stack_api import CompoundFilter

MAX_DEPTH = 32
MAX_KEY_LENGTH = 256
MAX_LIST_VALUES = 1024
_ORDER_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Comparison:
    key: str
    op: str  # eq, ne, gt, gte, lt, lte: one value; in, nin: one or more
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Compound:
    op: str  # and, or
    children: tuple["Filter", ...]


Filter = Comparison | Compound


def parse_filters(raw: Any) -> Filter | None:
    """The typed filter for an OpenAI filter (dict or Llama Stack's typed one); None for no filter. A filter parsed
    already is returned as it is."""
    if raw is None or (isinstance(raw, dict) and not raw):
        return None
    if isinstance(raw, Comparison | Compound):
        return raw
    return _parse(raw, depth=1)


def to_expression(node: Filter, path_of: Callable[[str], str]) -> str:
    """The Milvus expression for a parsed filter; `path_of(key)` reads attribute `key` (AttributeLayout.path)."""
    if isinstance(node, Compound):
        joiner = " and " if node.op == "and" else " or "
        return "(" + joiner.join(to_expression(child, path_of) for child in node.children) + ")"
    path = path_of(node.key)
    if node.op in ("eq", "ne"):
        return f"({path} {'==' if node.op == 'eq' else '!='} {_literal(node.values[0])})"
    if node.op in _ORDER_OPS:
        return f"({path} {_ORDER_OPS[node.op]} {_literal(node.values[0])})"
    if node.op == "in":
        return "(" + " or ".join(f"{path} == {_literal(value)}" for value in node.values) + ")"
    return "(" + " and ".join(f"{path} != {_literal(value)}" for value in node.values) + ")"


def _parse(raw: Any, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise ValueError(f"Invalid filters: nested deeper than {MAX_DEPTH} levels")
    try:
        node = parse_filter(raw)
    except ValueError as e:
        raise ValueError(f"Invalid filters: {e}") from e
    if isinstance(node, CompoundFilter):
        if not node.filters:
            raise ValueError(f"Invalid filters: '{node.type}' needs at least one filter in 'filters'")
        return Compound(node.type, tuple(_parse(child, depth + 1) for child in node.filters))
    key, op, value = node.key, node.type, node.value
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"Invalid filters: 'key' must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
    check_text(key)
    if op in ("eq", "ne"):
        return Comparison(key, op, (_scalar(key, op, value),))
    if op in _ORDER_OPS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"Invalid filters: '{op}' on key {key!r} needs a number or string, got {_kind(value)}")
        return Comparison(key, op, (_scalar(key, op, value),))
    if not isinstance(value, list) or not value:
        raise ValueError(f"Invalid filters: '{op}' on key {key!r} needs a non-empty list of values")
    if len(value) > MAX_LIST_VALUES:
        raise ValueError(f"Invalid filters: '{op}' on key {key!r} takes at most {MAX_LIST_VALUES} values")
    return Comparison(key, op, tuple(_scalar(key, op, item) for item in value))


def _scalar(key: str, op: str, value: Any) -> Scalar:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Invalid filters: '{op}' on key {key!r} needs a finite number, got {value}")
    if isinstance(value, str):
        check_text(value)
    if not isinstance(value, str | int | float | bool):
        raise ValueError(
            f"Invalid filters: '{op}' on key {key!r} needs a string, number or boolean, got {_kind(value)}"
        )
    return value


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return string_literal(value)


_ESCAPES = {"\\": "\\\\", '"': '\\"'}


def check_text(text: str) -> None:
    # Milvus Lite 3.x reads \n, Lite 2.5 neither \n nor a raw newline, and no line knows \u escapes: so of the
    # control characters only a raw tab is portable; the rest are refused rather than silently never matched.
    bad = next((ch for ch in text if (ord(ch) < 0x20 or ord(ch) == 0x7F) and ch != "\t"), None)
    if bad is not None:
        raise ValueError(f"Invalid filters: control character {bad!r} is not allowed in filter keys or values")


def string_literal(text: str) -> str:
    check_text(text)
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in text) + '"'


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
