"""Where a collection keeps each chunk's attributes (its metadata: file attributes, document id, filename).

Collections made by llama-stack-milvus 0.1 keep them in one JSON field, `attributes`. Newer ones keep each attribute
as a top-level key of Milvus' dynamic field ($meta): Milvus Lite 3.x evaluates a filter on a top-level $meta key
far faster than the same filter on a JSON field, which it parses row by row (filtered searches 5-11x faster at 10k
and 100k chunks, scripts/bench/search.py; nested keys under one $meta key gain nothing). Keys carry a prefix, so
no attribute can collide with a schema field ("content", "vector"). Older collections keep working as they are;
`llama-stack-milvus-migrate` export + import rewrites them in the new layout.
"""

from dataclasses import dataclass
from typing import Any

from .filters import string_literal

ATTRIBUTES_FIELD = "attributes"
DYNAMIC_KEY_PREFIX = "attr."


@dataclass(frozen=True)
class AttributeLayout:
    json_field: bool

    def path(self, key: str) -> str:
        """The filter expression that reads attribute `key`."""
        if self.json_field:
            return f"{ATTRIBUTES_FIELD}[{string_literal(key)}]"
        return f"$meta[{string_literal(DYNAMIC_KEY_PREFIX + key)}]"

    def columns(self, attributes: dict[str, Any]) -> dict[str, Any]:
        """A row's columns holding `attributes`."""
        if self.json_field:
            return {ATTRIBUTES_FIELD: attributes}
        return {DYNAMIC_KEY_PREFIX + key: value for key, value in attributes.items()}

    def read(self, entity: dict[str, Any]) -> dict[str, Any]:
        """The attributes of a row returned with `output_field`."""
        if self.json_field:
            return entity[ATTRIBUTES_FIELD] or {}
        cut = len(DYNAMIC_KEY_PREFIX)
        return {key[cut:]: value for key, value in entity.items() if key.startswith(DYNAMIC_KEY_PREFIX)}

    @property
    def output_field(self) -> str:
        return ATTRIBUTES_FIELD if self.json_field else "$meta"


DYNAMIC_LAYOUT = AttributeLayout(json_field=False)
JSON_FIELD_LAYOUT = AttributeLayout(json_field=True)


def layout_of(description: dict[str, Any]) -> AttributeLayout:
    """The layout of a collection, from `describe_collection`."""
    if any(field["name"] == ATTRIBUTES_FIELD for field in description["fields"]):
        return JSON_FIELD_LAYOUT
    return DYNAMIC_LAYOUT
