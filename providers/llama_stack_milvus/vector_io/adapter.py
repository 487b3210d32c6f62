"""The vector_io provider: OpenAIVectorStoreMixin for the OpenAI bookkeeping, MilvusIndex for the chunks.

Where it departs from the mixin, and why:
- registrations are written to the kvstore and reloaded, so stores survive a restart;
- search errors propagate (the mixin turns every exception into an empty 200) and input is validated first;
- 'auto' chunking uses the distribution's file_ingestion_params. The router rewrites 'auto' into a
  static 800/400-token strategy before we see it, so that exact strategy is read as 'auto' too;
- crashes, restarts, concurrent clients and bad files are handled in ResilientFilesMixin (resilience.py), and the
  kvstore is made safe for concurrent requests (kvstore.py).
"""

import json
import logging
import math
from typing import Any

from llama_stack.providers.utils.memory.openai_vector_store_mixin import (
    OPENAI_VECTOR_STORES_FILES_CONTENTS_PREFIX,
    OPENAI_VECTOR_STORES_FILES_PREFIX,
)
from llama_stack.providers.utils.memory.vector_store import VectorStoreWithIndex
from llama_stack.providers.utils.vector_io.filters import parse_filter
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
    VectorStoreChunkingStrategy,
    VectorStoreChunkingStrategyStatic,
    VectorStoreChunkingStrategyStaticConfig,
    VectorStoreNotFoundError,
    VectorStoresProtocolPrivate,
)
from llama_stack_api.vector_io.models import (
    DEFAULT_CHUNK_OVERLAP_TOKENS,
    DEFAULT_CHUNK_SIZE_TOKENS,
    OpenAIAttachFileRequest,
    OpenAICreateVectorStoreRequestWithExtraBody,
    OpenAISearchVectorStoreRequest,
    VectorStoreFileObject,
    VectorStoreObject,
    VectorStoreSearchResponse,
    VectorStoreSearchResponsePage,
)

from ..offline import ensure_tiktoken_cache
from .attributes import DYNAMIC_LAYOUT
from .backend import MilvusBackend, open_lite_backend, open_remote_backend
from .config import InlineMilvusConfig, MilvusCommonConfig
from .errors import MilvusBackendError, invalid_request_on_value_error
from .filters import translate_filters
from .index import MilvusIndex
from .kvstore import open_kvstore
from .resilience import ResilientFilesMixin

REGISTRATION_PREFIX = "llama_stack_milvus:vector_stores:v1::"
SEARCH_MODES = ("vector", "keyword", "hybrid")
RANKERS = ("rrf", "weighted", "neural")
MAX_NUM_RESULTS = 50


def quiet_per_chunk_query_logs() -> None:
    """VectorStoreWithIndex.query_chunks logs every query and a preview of every retrieved chunk at INFO: document
    text in the server log, and 50 log lines per search (a measurable share of a search's time). Raised to
    WARNING unless someone asked for DEBUG there (LLAMA_STACK_LOGGING)."""
    logger = logging.getLogger(VectorStoreWithIndex.__module__)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.WARNING)


class MilvusVectorIOAdapter(ResilientFilesMixin, VectorIO, VectorStoresProtocolPrivate):
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
        for raw in await self.kvstore.values_in_range(REGISTRATION_PREFIX, REGISTRATION_PREFIX + "\xff"):
            vector_store = VectorStore.model_validate_json(raw)
            self.stores[vector_store.identifier] = self._open_store(vector_store)
        await self.initialize_openai_vector_stores()

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

    def _store(self, vector_store_id: str) -> VectorStoreWithIndex:
        store = self.stores.get(vector_store_id)
        if store is None:
            raise VectorStoreNotFoundError(vector_store_id)
        return store

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
            await self._store(request.vector_store_id).insert_chunks(request)

    async def query_chunks(self, request: QueryChunksRequest) -> QueryChunksResponse:
        with invalid_request_on_value_error():
            return await self._store(request.vector_store_id).query_chunks(request)

    async def delete_chunks(self, request: DeleteChunksRequest) -> None:
        with invalid_request_on_value_error():
            await self._store(request.vector_store_id).index.delete_chunks(request.chunks)

    def _default_chunking(self) -> VectorStoreChunkingStrategyStatic:
        params = self.vector_stores_config.file_ingestion_params
        return VectorStoreChunkingStrategyStatic(
            static=VectorStoreChunkingStrategyStaticConfig(
                max_chunk_size_tokens=params.default_chunk_size_tokens,
                chunk_overlap_tokens=params.default_chunk_overlap_tokens,
            )
        )

    def _is_auto(self, strategy: VectorStoreChunkingStrategy | None) -> bool:
        if strategy is None or strategy.type == "auto":
            return True
        return isinstance(strategy, VectorStoreChunkingStrategyStatic) and (
            strategy.static.max_chunk_size_tokens,
            strategy.static.chunk_overlap_tokens,
        ) == (DEFAULT_CHUNK_SIZE_TOKENS, DEFAULT_CHUNK_OVERLAP_TOKENS)

    async def openai_create_vector_store(
        self, params: OpenAICreateVectorStoreRequestWithExtraBody
    ) -> VectorStoreObject:
        if self._is_auto(params.chunking_strategy):
            params = params.model_copy(update={"chunking_strategy": self._default_chunking()})
        return await super().openai_create_vector_store(params)

    # The mixin stores a file's chunks one kvstore key each: with the sqlite kvstore that is a connection and a
    # commit per chunk, and its range read returns them in key order (0, 1, 10, 100, 11, ...). We store the list
    # under one key: one commit, chunks in file order. Files stored the mixin's way still load, and the mixin's
    # delete removes both shapes (it deletes keys 0..n-1).
    async def _save_openai_vector_store_file(
        self, store_id: str, file_id: str, file_info: dict[str, Any], file_contents: list[dict[str, Any]]
    ) -> None:
        prefix = self._contents_prefix(store_id, file_id)
        # Keys only: reading the values back would load the previous contents (embeddings included) on every attach.
        stale = [key for key in await self.kvstore.keys_in_range(prefix, prefix + "\xff") if key != f"{prefix}0"]
        await self.kvstore.set(
            key=f"{OPENAI_VECTOR_STORES_FILES_PREFIX}{store_id}:{file_id}", value=json.dumps(file_info)
        )
        await self.kvstore.set(key=f"{prefix}0", value=json.dumps(file_contents))
        for key in stale:
            await self.kvstore.delete(key)

    async def _load_openai_vector_store_file_contents(self, store_id: str, file_id: str) -> list[dict[str, Any]]:
        prefix = self._contents_prefix(store_id, file_id)
        chunks: list[dict[str, Any]] = []
        for raw in await self.kvstore.values_in_range(prefix, prefix + "\xff"):
            stored = json.loads(raw)
            chunks.extend(stored if isinstance(stored, list) else [stored])
        return chunks

    @staticmethod
    def _contents_prefix(store_id: str, file_id: str) -> str:
        return f"{OPENAI_VECTOR_STORES_FILES_CONTENTS_PREFIX}{store_id}:{file_id}:"

    async def openai_attach_file_to_vector_store(
        self, vector_store_id: str, request: OpenAIAttachFileRequest
    ) -> VectorStoreFileObject:
        if vector_store_id not in self.openai_vector_stores:
            raise VectorStoreNotFoundError(vector_store_id)
        if self._is_auto(request.chunking_strategy):
            stored = self.openai_vector_stores[vector_store_id].get("chunking_strategy") or {}
            strategy = (
                VectorStoreChunkingStrategyStatic.model_validate(stored)
                if stored.get("type") == "static"
                else self._default_chunking()
            )
            request = request.model_copy(update={"chunking_strategy": strategy})
        return await super().openai_attach_file_to_vector_store(vector_store_id, request)

    async def openai_search_vector_store(
        self, vector_store_id: str, request: OpenAISearchVectorStoreRequest
    ) -> VectorStoreSearchResponsePage:
        query = " ".join(request.query) if isinstance(request.query, list) else request.query
        with invalid_request_on_value_error():
            params = self._search_params(request, query)
        if vector_store_id not in self.openai_vector_stores:
            raise VectorStoreNotFoundError(vector_store_id)
        response = await self.query_chunks(
            QueryChunksRequest(vector_store_id=vector_store_id, query=query, params=params)
        )
        data = [
            VectorStoreSearchResponse(
                file_id=chunk.metadata.get("document_id", ""),
                filename=chunk.metadata.get("filename", ""),
                score=score,
                attributes=chunk.metadata,
                content=self._chunk_to_vector_store_content(chunk),
            )
            for chunk, score in zip(response.chunks, response.scores, strict=True)
        ][: params["max_num_results"]]
        search_query = request.query if isinstance(request.query, list) else [request.query]
        return VectorStoreSearchResponsePage(search_query=search_query, data=data, has_more=False, next_page=None)

    def _search_params(self, request: OpenAISearchVectorStoreRequest, query: str) -> dict[str, Any]:
        """Validates a search request up front so that every mistake is a 400 naming the field."""
        mode = request.search_mode or "vector"
        if mode not in SEARCH_MODES:
            raise ValueError(f"search_mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}")
        if not query.strip():
            raise ValueError("query must contain some text")
        max_num_results = 10 if request.max_num_results is None else request.max_num_results
        if not 1 <= max_num_results <= MAX_NUM_RESULTS:
            raise ValueError(f"max_num_results must be between 1 and {MAX_NUM_RESULTS}; got {max_num_results}")
        ranking = request.ranking_options
        threshold = ranking.score_threshold if ranking and ranking.score_threshold is not None else 0.0
        if not math.isfinite(threshold):
            raise ValueError("ranking_options.score_threshold must be a finite number")
        if ranking and ranking.ranker is not None and ranking.ranker not in RANKERS:
            raise ValueError(f"ranking_options.ranker must be one of {', '.join(RANKERS)}; got {ranking.ranker!r}")
        params: dict[str, Any] = {
            "mode": mode,
            "max_num_results": max_num_results,
            # Over-fetch only for hybrid, where the fusion profits from deeper lists. A vector or keyword search ranks
            # the same candidates whatever its limit (HNSW's ef is fixed at >= 256), so a deeper fetch only costs.
            "max_chunks": max_num_results
            * (self.vector_stores_config.chunk_retrieval_params.chunk_multiplier if mode == "hybrid" else 1),
            "score_threshold": threshold,
        }
        if request.filters:
            translate_filters(request.filters, DYNAMIC_LAYOUT.path)  # validation: every layout accepts the same
            params["filters"] = parse_filter(request.filters)
        params.update(self._build_reranker_params(ranking, self.vector_stores_config))
        return params
