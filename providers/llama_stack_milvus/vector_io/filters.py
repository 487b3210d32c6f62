"""OpenAI attribute filters -> Milvus boolean expressions over a collection's attributes (see attributes.py).

Every key and value becomes a quoted, escaped literal, so no input can change the expression's
structure. `in`/`nin` expand to `==` disjunctions / `!=` conjunctions: Milvus Lite 3.x rejects `in` on
JSON paths and Lite 2.5 rejects `not`. On a chunk that lacks the key, `ne`/`nin` match on Lite 2.5 and Milvus
2.3.5 and not on Lite 3.x (Milvus' own semantics; no portable `exists`).
Invalid filters raise ValueError (HTTP 400) with a message naming the offending part.
"""

import math
from collections.abc import Callable
from typing import Any

from llama_stack.providers.utils.vector_io.filters import parse_filter
from llama_stack_api import ComparisonFilter, CompoundFilter

MAX_DEPTH = 32
MAX_KEY_LENGTH = 256
MAX_LIST_VALUES = 1024
_ORDER_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def translate_filters(filters: Any, path_of: Callable[[str], str]) -> str | None:
    """Returns the Milvus expression for an OpenAI filter (dict or typed), or None for no filter.

    `path_of(key)` is the expression reading attribute `key` (AttributeLayout.path)."""
    if filters is None:
        return None
    if isinstance(filters, dict) and not filters:
        return None
    try:
        parsed = parse_filter(filters)
    except ValueError as e:
        raise ValueError(f"Invalid filters: {e}") from e
    return _translate(parsed, path_of, depth=1)


def _translate(node: ComparisonFilter | CompoundFilter, path_of: Callable[[str], str], depth: int) -> str:
    if depth > MAX_DEPTH:
        raise ValueError(f"Invalid filters: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, CompoundFilter):
        if not node.filters:
            raise ValueError(f"Invalid filters: '{node.type}' needs at least one filter in 'filters'")
        parts = [_translate(parse_filter(child), path_of, depth + 1) for child in node.filters]
        joiner = " and " if node.type == "and" else " or "
        return "(" + joiner.join(parts) + ")"
    return _comparison(node, path_of)


def _comparison(node: ComparisonFilter, path_of: Callable[[str], str]) -> str:
    key = node.key
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"Invalid filters: 'key' must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
    path = path_of(key)
    op, value = node.type, node.value
    if op in ("eq", "ne"):
        return f"({path} {'==' if op == 'eq' else '!='} {_scalar_literal(key, op, value)})"
    if op in _ORDER_OPS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"Invalid filters: '{op}' on key {key!r} needs a number or string, got {_kind(value)}")
        return f"({path} {_ORDER_OPS[op]} {_scalar_literal(key, op, value)})"
    if not isinstance(value, list) or not value:
        raise ValueError(f"Invalid filters: '{op}' on key {key!r} needs a non-empty list of values")
    if len(value) > MAX_LIST_VALUES:
        raise ValueError(f"Invalid filters: '{op}' on key {key!r} takes at most {MAX_LIST_VALUES} values")
    if op == "in":
        return "(" + " or ".join(f"{path} == {_scalar_literal(key, op, item)}" for item in value) + ")"
    return "(" + " and ".join(f"{path} != {_scalar_literal(key, op, item)}" for item in value) + ")"


def _scalar_literal(key: str, op: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"Invalid filters: '{op}' on key {key!r} needs a finite number, got {value}")
        return repr(value)
    if isinstance(value, str):
        return string_literal(value)
    raise ValueError(f"Invalid filters: '{op}' on key {key!r} needs a string, number or boolean, got {_kind(value)}")


_ESCAPES = {"\\": "\\\\", '"': '\\"'}


def string_literal(text: str) -> str:
    # Milvus Lite 3.x reads \n, Lite 2.5 neither \n nor a raw newline, and no line knows \u escapes: so of the
    # control characters only a raw tab is portable; the rest are refused rather than silently never matched.
    bad = next((ch for ch in text if (ord(ch) < 0x20 or ord(ch) == 0x7F) and ch != "\t"), None)
    if bad is not None:
        raise ValueError(f"Invalid filters: control character {bad!r} is not allowed in filter keys or values")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in text) + '"'


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
