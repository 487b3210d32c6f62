"""The vector_io provider: Milvus wiring (backend, one MilvusIndex per store, registrations) under our layer over
Llama Stack's OpenAI vector-store mixin (openai_store.py, which lists every departure from the mixin).

Departures of this module: registrations are written to the kvstore and read through on every call, so stores
survive a restart (the built-in provider lost them) and one registered or deleted through another replica is seen;
chunk-level errors are 400s for bad input and 503s naming Milvus, never empty 200s; the kvstore is made safe for
concurrent requests (kvstore.py); query_chunks handles our search options and ranker "neural" around Llama Stack's
VectorStoreWithIndex (search_options.py, rerank.py).
Loading the provider also installs http_contract.py (HTTP errors, upload limits, replicas), postgres_kvstore.py
(kv_postgres for replicas) and file_search_quotes.py (quotes on the Responses API's file_search results and
file_citation annotations); each module's docstring lists its departures from upstream.
"""

import dataclasses
import logging
import math

from llama_stack.providers.utils.inference.prompt_adapter import interleaved_content_as_str
from llama_stack.providers.utils.memory.vector_store import VectorStoreWithIndex
from llama_stack_api import (
    DeleteChunksRequest,
    Files,
    HealthResponse,
    HealthStatus,
    Inference,
    InsertChunksRequest,
    QueryChunksRequest,
    QueryChunksResponse,
    VectorIO,
    VectorStore,
    VectorStoreNotFoundError,
    VectorStoresProtocolPrivate,
)

from ..errors import MilvusBackendError, MilvusOpenError, invalid_request_on_value_error
from ..http_contract import register_serving_hook
from ..offline import ensure_tiktoken_cache
from .backend import MilvusBackend, open_lite_backend, open_remote_backend
from .config import InlineMilvusConfig, MilvusCommonConfig
from .filters import parse_filters
from .index import MAX_SEARCH_LIMIT, MilvusIndex
from .kvstore import open_kvstore
from .openai_store import MilvusOpenAIVectorStoreMixin
from .rerank import rerank, rerank_model
from .search_options import OPTION_NAMES, SEARCH_OPTIONS, ExplainedChunks, parse_search_options

REGISTRATION_PREFIX = "llama_stack_milvus:vector_stores:v1::"


def quiet_per_chunk_query_logs() -> None:
    """VectorStoreWithIndex.query_chunks logs every query and a preview of every retrieved chunk at INFO: document
    text in the server log, and 50 log lines per search (a measurable share of a search's time). Raised to
    WARNING unless someone asked for DEBUG there (LLAMA_STACK_LOGGING)."""
    logger = logging.getLogger(VectorStoreWithIndex.__module__)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.WARNING)


class MilvusVectorIOAdapter(MilvusOpenAIVectorStoreMixin, VectorIO, VectorStoresProtocolPrivate):
    def __init__(self, config: MilvusCommonConfig, inference_api: Inference, files_api: Files | None) -> None:
        super().__init__(
            inference_api=inference_api, files_api=files_api, vector_stores_config=config.vector_stores_config
        )
        self.config = config
        self.backend: MilvusBackend | None = None
        self.stores: dict[str, VectorStoreWithIndex] = {}

    async def initialize(self) -> None:
        ensure_tiktoken_cache()
        quiet_per_chunk_query_logs()
        self.kvstore = await open_kvstore(self.config.persistence)
        self.backend = self._open_backend()
        if self.config.keyword_analyzer == "english" and not self.backend.capabilities.english_analyzer:
            raise MilvusOpenError(
                self.backend.description,
                f"keyword_analyzer is english, and {self.backend.capabilities.version} has no English analyser "
                "(Milvus Lite 3.x has only the standard one)",
                "Set keyword_analyzer: standard, or use Milvus Lite 2.5 or a Milvus 2.5+ server.",
            )
        for raw in await self.kvstore.values_in_range(REGISTRATION_PREFIX, REGISTRATION_PREFIX + "\xff"):
            vector_store = VectorStore.model_validate_json(raw)
            self.stores[vector_store.identifier] = self._open_store(vector_store)
        await self.initialize_openai_vector_stores()
        if self.backend.owns_data:
            # A Milvus Lite file serves one process: every lease in its kvstore was left by an earlier, dead one.
            await self.leases.clear_all()
        register_serving_hook(self.start_background_work)

    def _open_backend(self) -> MilvusBackend:
        if isinstance(self.config, InlineMilvusConfig):
            server = self.config.server_config()
            return open_remote_backend(server) if server else open_lite_backend(self.config)
        return open_remote_backend(self.config)

    async def shutdown(self) -> None:
        await super().shutdown()
        if self.backend:
            self.backend.close()

    async def health(self) -> HealthResponse:
        try:
            await self.backend.run("list collections", self.backend.client.list_collections)
        except MilvusBackendError as e:
            return HealthResponse(status=HealthStatus.ERROR, message=str(e))
        return HealthResponse(status=HealthStatus.OK)

    def _open_store(self, vector_store: VectorStore) -> VectorStoreWithIndex:
        index = MilvusIndex(self.backend, vector_store.identifier, vector_store.embedding_dimension, self.config)
        return VectorStoreWithIndex(
            vector_store=vector_store,
            index=index,
            inference_api=self.inference_api,
            vector_stores_config=self.vector_stores_config,
        )

    async def _store(self, vector_store_id: str) -> VectorStoreWithIndex:
        """Read through: another replica may have registered the store since this one started, or deleted it."""
        raw = await self.kvstore.get(REGISTRATION_PREFIX + vector_store_id)
        if raw is None:
            self._forget_store(vector_store_id)
            raise VectorStoreNotFoundError(vector_store_id)
        store = self.stores.get(vector_store_id)
        if store is None:
            store = self.stores[vector_store_id] = self._open_store(VectorStore.model_validate_json(raw))
        return store

    def _forget_store(self, vector_store_id: str) -> None:
        self.stores.pop(vector_store_id, None)

    async def register_vector_store(self, vector_store: VectorStore) -> None:
        store = self._open_store(vector_store)
        await store.index.create()
        await self.kvstore.set(REGISTRATION_PREFIX + vector_store.identifier, vector_store.model_dump_json())
        self.stores[vector_store.identifier] = store

    async def unregister_vector_store(self, vector_store_id: str) -> None:
        store = self.stores.pop(vector_store_id, None)
        if store is not None:
            await store.index.delete()
        await self.kvstore.delete(REGISTRATION_PREFIX + vector_store_id)

    async def insert_chunks(self, request: InsertChunksRequest) -> None:
        with invalid_request_on_value_error():
            store = await self._store(request.vector_store_id)
            await store.insert_chunks(request)

    async def query_chunks(self, request: QueryChunksRequest) -> QueryChunksResponse:
        """Our search options (search_options.py) and ranker "neural" (rerank.py) are handled here, around Llama
        Stack's VectorStoreWithIndex (which embeds the query and calls the index). The score threshold applies to
        the final scores (the reranker's, with "neural"); none when the params do not set one."""
        with invalid_request_on_value_error():
            store = await self._store(request.vector_store_id)
            params = dict(request.params or {})
            if params.get("filters") is not None:
                params["filters"] = parse_filters(params["filters"])
            options = parse_search_options({name: params.pop(name) for name in OPTION_NAMES if name in params})
            hybrid_depth = params.pop("hybrid_depth", 0)
            if not isinstance(hybrid_depth, int) or not 0 <= hybrid_depth <= MAX_SEARCH_LIMIT:
                raise ValueError(f"hybrid_depth must be an integer from 0 to {MAX_SEARCH_LIMIT}; got {hybrid_depth!r}")
            options = dataclasses.replace(options, hybrid_depth=hybrid_depth)
            threshold = params.pop("score_threshold", None)
            if threshold is not None and not math.isfinite(threshold):
                raise ValueError("score_threshold must be a finite number")
            reranker = None
            if params.get("reranker_type") == "neural":
                requested = (params.get("reranker_params") or {}).get("model") or params.get("neural_model")
                reranker = await rerank_model(self.inference_api, requested, self.vector_stores_config)
                # The candidates come from the distribution's default fusion (hybrid mode).
                for key in ("reranker_type", "reranker_params", "neural_model", "neural_weights"):
                    params.pop(key, None)
            token = SEARCH_OPTIONS.set(options)
            try:
                response = await store.query_chunks(
                    request.model_copy(update={"params": {**params, "score_threshold": None}})
                )
            finally:
                SEARCH_OPTIONS.reset(token)
        if reranker:
            query = interleaved_content_as_str(request.query)
            response = await rerank(self.inference_api, reranker, query, response, params.get("max_num_results"))
        if threshold is None:
            return response
        kept = [i for i, score in enumerate(response.scores) if score >= threshold]
        if len(kept) == len(response.scores):
            return response
        picked = {"chunks": [response.chunks[i] for i in kept], "scores": [response.scores[i] for i in kept]}
        if isinstance(response, ExplainedChunks):
            return ExplainedChunks(**picked, explanations=[response.explanations[i] for i in kept])
        return QueryChunksResponse(**picked)

    async def delete_chunks(self, request: DeleteChunksRequest) -> None:
        with invalid_request_on_value_error():
            store = await self._store(request.vector_store_id)
            await store.index.delete_chunks(request.chunks)
