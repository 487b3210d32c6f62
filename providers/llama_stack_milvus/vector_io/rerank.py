"""ranking_options.ranker "neural": the retrieved chunks reordered by a rerank model of the stack (inference.rerank).

Llama Stack's own path (VectorStoreWithIndex.apply_neural_rerank) logs and returns the unreranked list when no model
is configured, the model is unknown or the call fails: a 200 that looks reranked and is not. Here the model is
checked before the search (a 400 naming what to change) and a failing reranker is a 503 naming it.
"""

from typing import Any

import httpx
from llama_stack.core.datatypes import VectorStoresConfig
from llama_stack.providers.utils.inference.prompt_adapter import interleaved_content_as_str
from llama_stack_api import Inference, QueryChunksResponse
from llama_stack_api.inference import RerankRequest

from ..errors import InvalidRequestError, ProviderError
from .explain import with_rerank
from .search_options import ExplainedChunks


class RerankerError(ProviderError):
    """The rerank model failed: a 503 naming it, never the unreranked list."""

    status_code: httpx.codes = httpx.codes.SERVICE_UNAVAILABLE


async def rerank_model(inference_api: Inference, requested: str | None, config: VectorStoresConfig | None) -> str:
    """The registered rerank model to use: the request's, else vector_stores.default_reranker_model."""
    model = requested
    if not model and config and config.default_reranker_model:
        model = f"{config.default_reranker_model.provider_id}/{config.default_reranker_model.model_id}"
    if not model:
        raise InvalidRequestError(
            "ranking_options.ranker 'neural' needs a rerank model: name one in ranking_options.model, or configure "
            "vector_stores.default_reranker_model in the stack's config"
        )
    # The router accepts any "<provider>/<name>" without checking that such a model exists: look it up ourselves.
    models = (await inference_api.routing_table.list_models()).data
    found = next(
        (m for m in models if model in (m.identifier, f"{m.provider_id}/{m.provider_resource_id}")),
        None,
    )
    if found is None:
        raise InvalidRequestError(
            f"ranking_options.model {model!r} is not a model of this stack: register it with model_type 'rerank' "
            "(GET /v1/models lists the models)"
        )
    if found.model_type != "rerank":
        raise InvalidRequestError(
            f"ranking_options.model {model!r} is a model of type {found.model_type!s}, not a rerank model"
        )
    return found.identifier


async def rerank(
    inference_api: Inference, model: str, query: str, response: QueryChunksResponse, limit: int | None
) -> QueryChunksResponse:
    """The chunks in the model's order, each scored with the model's relevance score (its top `limit`)."""
    if not response.chunks:
        return response
    items: list[Any] = [interleaved_content_as_str(chunk.content) for chunk in response.chunks]
    try:
        reranked = await inference_api.rerank(
            RerankRequest(model=model, query=query, items=items, max_num_results=limit)
        )
    except Exception as e:
        raise RerankerError(f"The reranker {model} failed: {e}") from e
    order = sorted(reranked.data, key=lambda entry: -entry.relevance_score)
    if any(not 0 <= entry.index < len(items) for entry in order):
        raise RerankerError(f"The reranker {model} answered with an index outside the {len(items)} items it was given")
    chunks = [response.chunks[entry.index] for entry in order]
    scores = [entry.relevance_score for entry in order]
    if not isinstance(response, ExplainedChunks):
        return QueryChunksResponse(chunks=chunks, scores=scores)
    explanations = [with_rerank(response.explanations[entry.index], model, entry.relevance_score) for entry in order]
    return ExplainedChunks(chunks=chunks, scores=scores, explanations=explanations)
