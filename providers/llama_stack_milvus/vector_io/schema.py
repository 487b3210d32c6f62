"""The collection schema every store lives in: field names, collection creation, the dense index, row <-> chunk.

A row holds the chunk text (`content`), its dense vector, a BM25 sparse vector that Milvus computes from the text
(on servers with BM25), the chunk's remaining fields (`chunk_info`) and its attributes (file attributes, document
id, filename) in one of two layouts:
- collections made by llama-stack-milvus 0.1 keep attributes in one JSON field, `attributes`;
- newer ones keep each attribute as a top-level key of Milvus' dynamic field ($meta): Milvus Lite 3.x evaluates a
  filter on a top-level $meta key far faster than the same filter on a JSON field, which it parses row by row
  (filtered searches 5-11x faster at 10k and 100k chunks, scripts/bench/search.py; nested keys under one $meta key
  gain nothing). Keys carry a prefix, so no attribute can collide with a schema field. Older collections keep
  working as they are; `llama-stack-milvus-migrate` export + import rewrites them in the new layout.
Shared collections (collection_mode "shared") add the store id as partition key. Collections made where Milvus has
grouping search carry each row's file id (or, for a chunk inserted with no document, its own row id) in a scalar
field, `group_key`: Milvus groups only on schema fields, and `group_by_file` searches group on it in one call.
"""

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from llama_stack.providers.utils.inference.prompt_adapter import interleaved_content_as_str
from llama_stack_api import EmbeddedChunk
from pymilvus import DataType, Function, FunctionType

from ..errors import MilvusBackendError
from .backend import MilvusBackend
from .config import MilvusCommonConfig
from .filters import string_literal

ROW_ID = "row_id"
CONTENT = "content"
VECTOR = "vector"
CHUNK_INFO = "chunk_info"
SPARSE = "sparse"
STORE_FIELD = "store_id"
ATTRIBUTES_FIELD = "attributes"
GROUP_KEY = "group_key"
DYNAMIC_KEY_PREFIX = "attr."
# The fields every collection of ours has, whatever its layout: how migrate.py recognises one.
CORE_FIELDS = frozenset({ROW_ID, CONTENT, VECTOR, CHUNK_INFO})
MAX_ROW_ID_LENGTH = 512
MAX_STORE_ID_LENGTH = 256
MAX_CONTENT_BYTES = 65535
WRITE_BATCH_ROWS = 512


@dataclass(frozen=True)
class AttributeLayout:
    """Where a collection keeps each chunk's attributes, and whether its rows carry GROUP_KEY."""

    json_field: bool
    group_key: bool = False

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
    names = {field["name"] for field in description["fields"]}
    return AttributeLayout(json_field=ATTRIBUTES_FIELD in names, group_key=GROUP_KEY in names)


def group_key_for(document_id: str | None, row_id: str) -> str:
    """The group of a row in one-hit-per-file searches: its file, or itself for a chunk with no document."""
    return document_id or row_id


def collection_name_for(vector_store_id: str) -> str:
    """Milvus names allow letters, digits and underscores; a hash keeps distinct ids distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", vector_store_id)
    if cleaned != vector_store_id:
        cleaned = f"{cleaned}_{hashlib.sha1(vector_store_id.encode()).hexdigest()[:8]}"
    return f"lsm_{cleaned}"[:255]


def row_id_for(chunk_id: str, document_id: str | None) -> str:
    """The primary key: chunk ids alone repeat across files with equal text, so the document is part of it."""
    row_id = f"{document_id}:{chunk_id}" if document_id else chunk_id
    if len(row_id) > MAX_ROW_ID_LENGTH:
        raise ValueError(f"chunk_id {chunk_id!r} with its document id is longer than {MAX_ROW_ID_LENGTH} characters")
    return row_id


def chunk_to_row(chunk: EmbeddedChunk, layout: AttributeLayout) -> dict[str, Any]:
    text = chunk.content if isinstance(chunk.content, str) else interleaved_content_as_str(chunk.content)
    if len(text.encode()) > MAX_CONTENT_BYTES:
        raise ValueError(
            f"chunk {chunk.chunk_id!r} holds {len(text.encode())} bytes of text; Milvus stores at most "
            f"{MAX_CONTENT_BYTES}: use a smaller chunking_strategy.static.max_chunk_size_tokens"
        )
    info = chunk.model_dump(mode="json", exclude={"embedding", "metadata", "content"})
    if not isinstance(chunk.content, str):
        info[CONTENT] = chunk.model_dump(mode="json", include={"content"})["content"]
    row = {
        ROW_ID: row_id_for(chunk.chunk_id, chunk.document_id),
        CONTENT: text,
        VECTOR: [float(x) for x in chunk.embedding],
        CHUNK_INFO: info,
        **layout.columns(chunk.metadata),
    }
    if layout.group_key:
        row[GROUP_KEY] = group_key_for(chunk.document_id, row[ROW_ID])
    return row


def row_to_chunk(entity: dict[str, Any], layout: AttributeLayout) -> EmbeddedChunk:
    info = dict(entity[CHUNK_INFO])
    info.setdefault(CONTENT, entity[CONTENT])
    return EmbeddedChunk(**info, metadata=layout.read(entity), embedding=list(entity[VECTOR]))


def output_fields(layout: AttributeLayout) -> list[str]:
    return [ROW_ID, CONTENT, CHUNK_INFO, VECTOR, layout.output_field]


def uses_hnsw(config: MilvusCommonConfig, backend: MilvusBackend) -> bool:
    return config.index_type == "HNSW" or (config.index_type == "auto" and backend.capabilities.hnsw)


def dense_index(config: MilvusCommonConfig, backend: MilvusBackend) -> dict[str, Any]:
    if uses_hnsw(config, backend):
        return {"index_type": "HNSW", "params": {"M": config.hnsw_m, "efConstruction": config.hnsw_ef_construction}}
    index_type = "FLAT" if config.index_type == "auto" else config.index_type
    return {"index_type": index_type, "params": {"nlist": 128} if index_type == "IVF_FLAT" else {}}


def analyzer(config: MilvusCommonConfig) -> dict[str, Any]:
    """The content field's analyser arguments (the adapter refuses to start with "english" on a Milvus without it).
    Milvus applies a collection's analyser to its rows and to every keyword query, so a collection keeps the one it
    was created with whatever the config says later."""
    return {"analyzer_params": {"type": "english"}} if config.keyword_analyzer == "english" else {}


async def create_chunk_collection(
    backend: MilvusBackend, name: str, dimension: int, config: MilvusCommonConfig, shared: bool
) -> None:
    client = backend.client
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field(ROW_ID, DataType.VARCHAR, is_primary=True, max_length=MAX_ROW_ID_LENGTH)
    if shared:
        schema.add_field(STORE_FIELD, DataType.VARCHAR, max_length=MAX_STORE_ID_LENGTH, is_partition_key=True)
    schema.add_field(
        CONTENT,
        DataType.VARCHAR,
        max_length=MAX_CONTENT_BYTES,
        enable_analyzer=backend.capabilities.bm25,
        **analyzer(config),
    )
    schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field(CHUNK_INFO, DataType.JSON)
    if backend.capabilities.grouping:
        schema.add_field(GROUP_KEY, DataType.VARCHAR, max_length=MAX_ROW_ID_LENGTH)
    index_params = client.prepare_index_params()
    index_params.add_index(field_name=VECTOR, metric_type="COSINE", **dense_index(config, backend))
    if backend.capabilities.bm25:
        schema.add_field(SPARSE, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="content_bm25",
                input_field_names=[CONTENT],
                output_field_names=[SPARSE],
                function_type=FunctionType.BM25,
            )
        )
        index_params.add_index(field_name=SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    await backend.run(
        f"create collection {name}",
        client.create_collection,
        collection_name=name,
        schema=schema,
        index_params=index_params,
        consistency_level=config.consistency_level,
    )


async def upsert_rows(backend: MilvusBackend, collection: str, rows: list[dict[str, Any]]) -> None:
    """Upserts rows in batches, then flushes where the backend needs it (see Capabilities.flush_after_write)."""
    for start in range(0, len(rows), WRITE_BATCH_ROWS):
        await backend.run(
            f"upsert into {collection}",
            backend.client.upsert,
            collection_name=collection,
            data=rows[start : start + WRITE_BATCH_ROWS],
        )
    await flush(backend, collection)


# What Milvus Lite says when a concurrent flush of the collection (another replica's) got further than this one.
FLUSHED_FURTHER = "current_seq is monotonic"


async def flush(backend: MilvusBackend, collection: str) -> None:
    if not backend.capabilities.flush_after_write:
        return
    try:
        await backend.run(f"flush {collection}", backend.client.flush, collection_name=collection)
    except MilvusBackendError as e:
        # Our write lock serializes flushes within one process only; behind `milvus-lite server` several replicas
        # flush one collection at once, and the one that lost the race fails although its rows were flushed.
        if FLUSHED_FURTHER not in str(e):
            raise
