"""A vector store's chunks in Milvus (the collection schema is in schema.py): upsert, delete, count, and the vector,
keyword and hybrid searches with filters.

per_store mode gives each store its own collection. shared mode keeps every store of one embedding
dimension in one collection, with the store id as partition key and in every expression, so a deployment
can hold thousands of stores and no search crosses stores.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from llama_stack.providers.utils.memory.vector_store import RERANKER_TYPE_WEIGHTED, EmbeddingIndex
from llama_stack_api import ChunkForDeletion, EmbeddedChunk, QueryChunksResponse
from numpy.typing import NDArray
from pymilvus.exceptions import MilvusException

from ..errors import MilvusBackendError, MilvusFeatureUnsupportedError
from .backend import MilvusBackend
from .config import MilvusCommonConfig
from .explain import explanation, leg_positions
from .filters import Filter, string_literal, to_expression
from .fusion import Hits, reciprocal_rank_fusion, weighted_fusion
from .schema import (
    DYNAMIC_LAYOUT,
    GROUP_KEY,
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
from .search_options import ExplainedChunks, current_search_options

# Milvus' largest search limit (topk), and how much deeper each round of a group_by_file search looks.
MAX_SEARCH_LIMIT = 16384
GROUP_DEEPENING = 4


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

    async def _search(
        self,
        leg: str,
        data: Any,
        field: str,
        metric: str,
        k: int,
        filters: Filter | None,
        by_file: bool = False,
        slim: bool = False,
    ) -> list[dict]:
        """The k best rows of one leg; ``by_file``: the best row of each of the k best files (Milvus' grouping
        search, where the collection has GROUP_KEY); ``slim``: only what fusion needs (_slim_fields)."""
        await self._ensure_loaded()
        expression = self._where(to_expression(filters, self.layout.path) if filters else "")
        # Only where this process is the only writer: on a server, another replica may have filled the store since.
        if self._empty and self.backend.owns_data:
            return []
        params: dict[str, Any] = {"metric_type": metric}
        if field == VECTOR and uses_hnsw(self.config, self.backend):
            params["params"] = {"ef": max(self.config.hnsw_ef_search, k)}
        grouping = {"group_by_field": GROUP_KEY} if by_file else {}
        result = await self._read(
            f"run a {leg} search in {self.collection}",
            self.backend.client.search,
            data=[data],
            anns_field=field,
            limit=k,
            filter=expression,
            output_fields=self._slim_fields() if slim else output_fields(self.layout),
            search_params=params,
            **grouping,
        )
        return list(result[0])

    def _slim_fields(self) -> list[str]:
        """What a leg whose rows are read later returns: ids, and attributes where hits are grouped by file here."""
        return [ROW_ID, self.layout.output_field] if current_search_options().group_by_file else [ROW_ID]

    def _groups_natively(self) -> bool:
        """Whether this search groups by file in Milvus: group_by_file on a collection with GROUP_KEY (made only
        where Milvus has grouping search)."""
        return current_search_options().group_by_file and self.layout.group_key

    async def _vector_hits(
        self, embedding: NDArray, k: int, filters: Filter | None, by_file: bool = False, slim: bool = False
    ) -> tuple[Hits, dict[str, dict]]:
        vector = [float(x) for x in embedding]
        found = await self._search("vector", vector, VECTOR, "COSINE", k, filters, by_file, slim)
        return _hits(found, lambda distance: distance)

    async def _keyword_hits(
        self, query: str, k: int, filters: Filter | None, by_file: bool = False, slim: bool = False
    ) -> tuple[Hits, dict[str, dict]]:
        if not self.backend.capabilities.bm25:
            raise MilvusFeatureUnsupportedError(
                f"{self.backend.description} runs Milvus {self.backend.capabilities.version}, which has no BM25 "
                "full-text search: keyword and hybrid search need Milvus 2.5 or newer; use search_mode='vector'"
            )
        found = await self._search("keyword", query, SPARSE, "BM25", k, filters, by_file, slim)
        # Milvus Lite 3.x reports BM25 as negative distances (best first); the magnitude is the score.
        return _hits(found, abs)

    async def query_vector(
        self, embedding: NDArray, k: int, score_threshold: float | None, filters: Filter | None = None
    ) -> QueryChunksResponse:
        async def ranked(depth: int) -> _Ranked:
            hits, entities = await self._vector_hits(embedding, depth, filters, self._groups_natively())
            return _Ranked(hits, entities, len(hits) < depth, depth, vector=hits)

        return self._response("vector", await self._deepening(ranked, k), k, score_threshold)

    async def query_keyword(
        self, query_string: str, k: int, score_threshold: float | None, filters: Filter | None = None
    ) -> QueryChunksResponse:
        async def ranked(depth: int) -> _Ranked:
            hits, entities = await self._keyword_hits(query_string, depth, filters, self._groups_natively())
            return _Ranked(hits, entities, len(hits) < depth, depth, keyword=hits)

        return self._response("keyword", await self._deepening(ranked, k), k, score_threshold)

    async def query_hybrid(
        self,
        embedding: NDArray,
        query_string: str,
        k: int,
        score_threshold: float | None,
        reranker_type: str,
        reranker_params: dict[str, Any] | None = None,
        filters: Filter | None = None,
    ) -> QueryChunksResponse:
        reranker_params = reranker_params or {}
        weighted = reranker_type == RERANKER_TYPE_WEIGHTED
        alpha = float(reranker_params.get("alpha", 0.5))
        rrf_k = float(reranker_params.get("impact_factor", 60))

        # The legs return ids (and attributes to group by file): each would otherwise materialise all its rows,
        # vectors included, where only the k best of their fusion are returned (_with_rows).
        async def ranked(depth: int) -> _Ranked:
            (vector_hits, vector_entities), (keyword_hits, keyword_entities) = await asyncio.gather(
                self._vector_hits(embedding, depth, filters, slim=True),
                self._keyword_hits(query_string, depth, filters, slim=True),
            )
            if weighted:
                fused = weighted_fusion(vector_hits, keyword_hits, alpha)
                best_keyword = max((score for _, score in keyword_hits), default=0.0)
                fusion = {"ranker": "weighted", "alpha": alpha, "bm25_max": best_keyword}
            else:
                fused = reciprocal_rank_fusion(vector_hits, keyword_hits, rrf_k)
                fusion = {"ranker": "rrf", "k": rrf_k}
            exhausted = len(vector_hits) < depth and len(keyword_hits) < depth
            entities = {**keyword_entities, **vector_entities}
            return _Ranked(fused, entities, exhausted, depth, vector_hits, keyword_hits, fusion)

        # Our OpenAI search asks for the hits it returns, and fuses legs as deep as it asks (hybrid_depth).
        result = await self._deepening(ranked, k, max(k, current_search_options().hybrid_depth))
        return self._response("hybrid", await self._with_rows(result, k), k, score_threshold)

    async def _with_rows(self, result: "_Ranked", k: int) -> "_Ranked":
        """The k best hits with their rows, read in one call (a row deleted since the search is left out)."""
        best = [row_id for row_id, _ in result.hits[:k]]
        if not best:
            return result
        rows = await self._read(
            f"read the hits of a hybrid search in {self.collection}",
            self.backend.client.get,
            ids=best,
            output_fields=output_fields(self.layout),
        )
        result.entities = {row[ROW_ID]: row for row in rows}
        result.hits = [hit for hit in result.hits[:k] if hit[0] in result.entities]
        return result

    async def _deepening(
        self, ranked: Callable[[int], Awaitable["_Ranked"]], k: int, depth: int | None = None
    ) -> "_Ranked":
        """The ranked hits of a search of depth k; with group_by_file, the best hit of each file, searched deeper
        until k files are found or the store has no more. A vector or keyword leg that Milvus grouped already holds
        k files (or all there are), so one round ends it. Elsewhere this is the exact fallback: collections made
        before GROUP_KEY (and Milvus 2.3, which has no grouping search) keep a chunk's file id only as a dynamic-field
        key, which Milvus cannot group on; and hybrid search fuses the legs here, so the best chunk of a file is
        known only after fusion (grouping each leg would fuse each file's best vector chunk with its best keyword
        chunk, which may be different chunks). ``depth``: how deep the first round reads (default k)."""
        depth = depth or k
        while True:
            result = await ranked(depth)
            if not current_search_options().group_by_file:
                return result
            result.hits = _best_of_each_file(result.hits, result.entities, self.layout)
            if len(result.hits) >= k or result.exhausted or depth >= MAX_SEARCH_LIMIT:
                return result
            depth = min(depth * GROUP_DEEPENING, MAX_SEARCH_LIMIT)

    def _response(self, mode: str, result: "_Ranked", k: int, score_threshold: float | None) -> QueryChunksResponse:
        kept = [
            (row_id, score) for row_id, score in result.hits[:k] if score_threshold is None or score >= score_threshold
        ]
        chunks = [row_to_chunk(result.entities[row_id], self.layout) for row_id, _ in kept]
        scores = [score for _, score in kept]
        if not current_search_options().explain:
            return QueryChunksResponse(chunks=chunks, scores=scores)
        vector = leg_positions(result.vector) if result.vector is not None else None
        keyword = leg_positions(result.keyword) if result.keyword is not None else None
        explanations = [
            explanation(mode, row_id, score, result.depth, vector, keyword, result.fusion) for row_id, score in kept
        ]
        return ExplainedChunks(chunks=chunks, scores=scores, explanations=explanations)


@dataclass
class _Ranked:
    """One search's final ranking (hits, best first) with the legs and the fusion that produced it."""

    hits: Hits
    entities: dict[str, dict]
    exhausted: bool  # no leg had more hits to give
    depth: int
    vector: Hits | None = None
    keyword: Hits | None = None
    fusion: dict[str, Any] | None = None


def _best_of_each_file(hits: Hits, entities: dict[str, dict], layout: AttributeLayout) -> Hits:
    """The first (best) hit of each file; a chunk with no file (inserted through insert_chunks) is its own group."""
    seen: set[str] = set()
    best: Hits = []
    for row_id, score in hits:
        file_id = layout.read(entities[row_id]).get("document_id") or row_id
        if file_id not in seen:
            seen.add(file_id)
            best.append((row_id, score))
    return best


def _released(error: MilvusBackendError) -> bool:
    cause = error.__cause__
    if not isinstance(cause, MilvusException):
        return False
    return cause.code == 101 or "released" in str(cause.message) or "not loaded" in str(cause.message)


def _hits(found: list[dict], score_of) -> tuple[Hits, dict[str, dict]]:
    return [(hit["entity"][ROW_ID], score_of(float(hit["distance"]))) for hit in found], {
        hit["entity"][ROW_ID]: hit["entity"] for hit in found
    }
