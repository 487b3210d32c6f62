"""A vector store's chunks in Milvus (the collection schema is in schema.py): upsert, delete, count, and the vector,
keyword and hybrid searches with filters.

per_store mode gives each store its own collection. shared mode keeps every store of one embedding
dimension in one collection, with the store id as partition key and in every expression, so a deployment
can hold thousands of stores and no search crosses stores.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from llama_stack.providers.utils.memory.vector_store import RERANKER_TYPE_WEIGHTED, EmbeddingIndex
from llama_stack_api import ChunkForDeletion, EmbeddedChunk, QueryChunksResponse
from numpy.typing import NDArray
from pymilvus.exceptions import MilvusException

from ..errors import MilvusBackendError, MilvusFeatureUnsupportedError
from .backend import MilvusBackend
from .config import MilvusCommonConfig
from .filters import Filter, string_literal, to_expression
from .fusion import Hits, reciprocal_rank_fusion, weighted_fusion
from .schema import (
    DYNAMIC_LAYOUT,
    MAX_ROW_ID_LENGTH,
    MAX_STORE_ID_LENGTH,
    ROW_ID,
    SPARSE,
    STORE_FIELD,
    VECTOR,
    WRITE_BATCH_ROWS,
    AttributeLayout,
    chunk_to_row,
    collection_name_for,
    create_chunk_collection,
    flush,
    layout_of,
    output_fields,
    row_id_for,
    row_to_chunk,
    upsert_rows,
    uses_hnsw,
)


class MilvusIndex(EmbeddingIndex):
    def __init__(self, backend: MilvusBackend, vector_store_id: str, dimension: int, config: MilvusCommonConfig):
        self.backend = backend
        self.vector_store_id = vector_store_id
        self.dimension = dimension
        self.config = config
        self.shared = config.collection_mode == "shared"
        if self.shared:
            if len(vector_store_id) > MAX_STORE_ID_LENGTH:
                raise ValueError(f"vector store id is longer than {MAX_STORE_ID_LENGTH} characters")
            self.collection = f"{config.shared_collection_prefix}_{dimension}"
            self.store_clause = f"{STORE_FIELD} == {string_literal(vector_store_id)}"
        else:
            self.collection = collection_name_for(vector_store_id)
            self.store_clause = ""
        self._loaded = False
        self._load_lock = asyncio.Lock()
        # Read from the collection on load: collections of 0.1 keep attributes in a JSON field.
        self.layout: AttributeLayout = DYNAMIC_LAYOUT
        # Searching an empty store is wasted work, and BM25 on an empty collection fails in Lite 2.5 (NaN
        # average length) after minutes of pymilvus retries; known after the first load, kept current by writes.
        self._empty = True

    def _where(self, expression: str = "") -> str:
        """Scopes an expression to this store (shared mode only)."""
        if not self.store_clause:
            return expression
        return f"{self.store_clause} and ({expression})" if expression else self.store_clause

    def _scoped(self, row_id: str) -> str:
        """Shared collections hold every store's rows, so the store is part of the primary key."""
        if not self.shared:
            return row_id
        if len(row_id) + len(self.vector_store_id) + 1 > MAX_ROW_ID_LENGTH:
            raise ValueError(f"chunk id {row_id!r} is too long for a shared collection ({MAX_ROW_ID_LENGTH} max)")
        return f"{self.vector_store_id}/{row_id}"

    async def _collection_exists(self) -> bool:
        return await self.backend.run(
            f"check collection {self.collection}", self.backend.client.has_collection, collection_name=self.collection
        )

    async def create(self) -> None:
        """Creates the collection (idempotent) so that even an empty store can be searched."""
        if self.shared and not self.backend.capabilities.partition_key_filters:
            raise ValueError(
                f"collection_mode 'shared' needs a Milvus server or Milvus Lite 3.x; "
                f"{self.backend.capabilities.version} cannot filter on a partition key"
            )
        if not await self._collection_exists():
            await create_chunk_collection(self.backend, self.collection, self.dimension, self.config, self.shared)
        self._loaded = False

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return
            if not await self._collection_exists():
                raise MilvusBackendError(
                    f"Milvus ({self.backend.description}) has no collection {self.collection} for vector store "
                    f"{self.vector_store_id}: its data is gone from Milvus"
                )
            # Milvus Lite 3.x leaves collections released after a reopen; elsewhere this is a cheap no-op.
            await self.backend.run(
                f"load collection {self.collection}",
                self.backend.client.load_collection,
                collection_name=self.collection,
            )
            description = await self.backend.run(
                f"describe collection {self.collection}",
                self.backend.client.describe_collection,
                collection_name=self.collection,
            )
            self.layout = layout_of(description)
            self._loaded = True
            self._empty = await self._count() == 0

    async def add_chunks(self, embedded_chunks: list[EmbeddedChunk]) -> None:
        await self._ensure_loaded()
        rows = [chunk_to_row(chunk, self.layout) for chunk in embedded_chunks]
        for row in rows:
            row[ROW_ID] = self._scoped(row[ROW_ID])
            if self.shared:
                row[STORE_FIELD] = self.vector_store_id
        # Later duplicates of a row win, as they would with one upsert per chunk.
        rows = list({row[ROW_ID]: row for row in rows}.values())
        if not rows:
            return
        async with self.backend.write_lock(self.collection):
            await upsert_rows(self.backend, self.collection, rows)
        self._empty = False

    async def delete_chunks(self, chunks_for_deletion: list[ChunkForDeletion]) -> None:
        row_ids = [string_literal(self._scoped(row_id_for(c.chunk_id, c.document_id))) for c in chunks_for_deletion]
        if not row_ids:
            return
        await self._ensure_loaded()
        async with self.backend.write_lock(self.collection):
            for start in range(0, len(row_ids), WRITE_BATCH_ROWS):
                await self._delete_where(f"{ROW_ID} in [{', '.join(row_ids[start : start + WRITE_BATCH_ROWS])}]")
            await flush(self.backend, self.collection)
        self._empty = await self._count() == 0

    async def _delete_where(self, expression: str) -> None:
        await self.backend.run(
            f"delete from {self.collection}",
            self.backend.client.delete,
            collection_name=self.collection,
            filter=self._where(expression),
        )

    async def count(self) -> int:
        await self._ensure_loaded()
        return await self._count()

    async def _count(self) -> int:
        result = await self._read(
            f"count rows of {self.collection}",
            self.backend.client.query,
            filter=self._where(),
            output_fields=["count(*)"],
        )
        return int(result[0]["count(*)"])

    async def _read(self, action: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        """A search or query; a Milvus (Lite) server that restarted has released the collection: load, retry once."""
        try:
            return await self.backend.run(action, method, collection_name=self.collection, **kwargs)
        except MilvusBackendError as e:
            if not _released(e):
                raise
        await self.backend.run(
            f"reload collection {self.collection}", self.backend.client.load_collection, collection_name=self.collection
        )
        return await self.backend.run(action, method, collection_name=self.collection, **kwargs)

    async def delete(self) -> None:
        if not await self._collection_exists():
            return
        if self.shared:
            await self._ensure_loaded()
            async with self.backend.write_lock(self.collection):
                await self._delete_where("")
                await flush(self.backend, self.collection)
        else:
            await self.backend.run(
                f"drop collection {self.collection}",
                self.backend.client.drop_collection,
                collection_name=self.collection,
            )
        self._loaded = False

    async def _search(self, leg: str, data: Any, field: str, metric: str, k: int, filters: Filter | None) -> list[dict]:
        await self._ensure_loaded()
        expression = self._where(to_expression(filters, self.layout.path) if filters else "")
        # Only where this process is the only writer: on a server, another replica may have filled the store since.
        if self._empty and self.backend.owns_data:
            return []
        params: dict[str, Any] = {"metric_type": metric}
        if field == VECTOR and uses_hnsw(self.config, self.backend):
            params["params"] = {"ef": max(self.config.hnsw_ef_search, k)}
        result = await self._read(
            f"run a {leg} search in {self.collection}",
            self.backend.client.search,
            data=[data],
            anns_field=field,
            limit=k,
            filter=expression,
            output_fields=output_fields(self.layout),
            search_params=params,
        )
        return list(result[0])

    async def _vector_hits(self, embedding: NDArray, k: int, filters: Filter | None) -> tuple[Hits, dict[str, dict]]:
        found = await self._search("vector", [float(x) for x in embedding], VECTOR, "COSINE", k, filters)
        return _hits(found, lambda distance: distance)

    async def _keyword_hits(self, query: str, k: int, filters: Filter | None) -> tuple[Hits, dict[str, dict]]:
        if not self.backend.capabilities.bm25:
            raise MilvusFeatureUnsupportedError(
                f"{self.backend.description} runs Milvus {self.backend.capabilities.version}, which has no BM25 "
                "full-text search: keyword and hybrid search need Milvus 2.5 or newer; use search_mode='vector'"
            )
        found = await self._search("keyword", query, SPARSE, "BM25", k, filters)
        # Milvus Lite 3.x reports BM25 as negative distances (best first); the magnitude is the score.
        return _hits(found, abs)

    async def query_vector(
        self, embedding: NDArray, k: int, score_threshold: float, filters: Filter | None = None
    ) -> QueryChunksResponse:
        hits, entities = await self._vector_hits(embedding, k, filters)
        return _response(hits, entities, score_threshold, self.layout)

    async def query_keyword(
        self, query_string: str, k: int, score_threshold: float, filters: Filter | None = None
    ) -> QueryChunksResponse:
        hits, entities = await self._keyword_hits(query_string, k, filters)
        return _response(hits, entities, score_threshold, self.layout)

    async def query_hybrid(
        self,
        embedding: NDArray,
        query_string: str,
        k: int,
        score_threshold: float,
        reranker_type: str,
        reranker_params: dict[str, Any] | None = None,
        filters: Filter | None = None,
    ) -> QueryChunksResponse:
        reranker_params = reranker_params or {}
        (vector_hits, vector_entities), (keyword_hits, keyword_entities) = await asyncio.gather(
            self._vector_hits(embedding, k, filters), self._keyword_hits(query_string, k, filters)
        )
        if reranker_type == RERANKER_TYPE_WEIGHTED:
            fused = weighted_fusion(vector_hits, keyword_hits, float(reranker_params.get("alpha", 0.5)))
        else:
            fused = reciprocal_rank_fusion(vector_hits, keyword_hits, float(reranker_params.get("impact_factor", 60)))
        return _response(fused[:k], {**keyword_entities, **vector_entities}, score_threshold, self.layout)


def _released(error: MilvusBackendError) -> bool:
    cause = error.__cause__
    if not isinstance(cause, MilvusException):
        return False
    return cause.code == 101 or "released" in str(cause.message) or "not loaded" in str(cause.message)


def _hits(found: list[dict], score_of) -> tuple[Hits, dict[str, dict]]:
    return [(hit["entity"][ROW_ID], score_of(float(hit["distance"]))) for hit in found], {
        hit["entity"][ROW_ID]: hit["entity"] for hit in found
    }


def _response(
    hits: Hits, entities: dict[str, dict], score_threshold: float, layout: AttributeLayout
) -> QueryChunksResponse:
    # A threshold of 0 (the API default) means none: unrelated chunks can have a negative cosine.
    kept = [(row_id, score) for row_id, score in hits if score_threshold <= 0 or score >= score_threshold]
    return QueryChunksResponse(
        chunks=[row_to_chunk(entities[row_id], layout) for row_id, _ in kept], scores=[score for _, score in kept]
    )
