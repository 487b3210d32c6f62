"""Search options beyond OpenAI's request body, and how they reach the index.

A client sends them as extra top-level fields of the search body (the openai SDK's and llama-stack-client's
`extra_body`, or plain JSON with curl):
- `explain: true`: each hit carries the evidence behind its score (see explain.py);
- `group_by_file: true`: one hit per file, the best chunk of each of the top files;
- `quote: true`: each hit carries the sentence of its chunk that best supports the query (see quote.py).

Llama Stack 0.7.3 parses the body into OpenAISearchVectorStoreRequest, which drops unknown fields: without
accept_extra_search_fields() these options would never reach a provider. The server builds its routes after the
providers are imported, so rebuilding the model here makes the routes keep the extra fields. An unknown extra field
is then a 400 naming it (it used to vanish without a word).

The options travel to MilvusIndex in a context variable: Llama Stack's VectorStoreWithIndex sits between the adapter
and the index and passes on only the arguments it knows.
"""

import contextvars
from dataclasses import dataclass
from typing import Any

from llama_stack_api import QueryChunksResponse
from llama_stack_api.vector_io.models import OpenAISearchVectorStoreRequest

OPTION_NAMES = ("explain", "group_by_file", "quote")


def accept_extra_search_fields() -> None:
    if OpenAISearchVectorStoreRequest.model_config.get("extra") != "allow":
        OpenAISearchVectorStoreRequest.model_config["extra"] = "allow"
        OpenAISearchVectorStoreRequest.model_rebuild(force=True)


@dataclass(frozen=True)
class SearchOptions:
    explain: bool = False
    group_by_file: bool = False
    quote: bool = False
    # Not a client's option: how deep a hybrid search reads each leg when it returns fewer hits (our OpenAI search).
    hybrid_depth: int = 0


def parse_search_options(extra: dict[str, Any] | None) -> SearchOptions:
    """The options among a request's extra fields; a 400 (ValueError) for an unknown field or a non-boolean value."""
    extra = extra or {}
    unknown = sorted(set(extra) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(
            f"unknown search field(s) {', '.join(map(repr, unknown))}; this server adds {', '.join(OPTION_NAMES)} "
            "to the OpenAI search fields"
        )
    for name, value in extra.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false; got {value!r}")
    return SearchOptions(**extra)


# Set by the adapter around one query, read by MilvusIndex through current_search_options().
SEARCH_OPTIONS: contextvars.ContextVar[SearchOptions | None] = contextvars.ContextVar("search_options", default=None)


def current_search_options() -> SearchOptions:
    return SEARCH_OPTIONS.get() or SearchOptions()


class ExplainedChunks(QueryChunksResponse):
    """A query's answer with one explanation per chunk (explain.py says what one holds), in the chunks' order."""

    explanations: list[dict[str, Any]]
