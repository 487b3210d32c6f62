"""Collections made by llama-stack-milvus 0.1 keep attributes in a JSON field: they keep working as they are, and
llama-stack-milvus-migrate rewrites them in the dynamic-field layout with every attribute and filter intact."""

import itertools
import subprocess
import sys

import pytest
import test_index_lite as index_tests
from milvus_lite.server_manager import server_manager_instance
from pymilvus import DataType, Function, FunctionType

from llama_stack_milvus.vector_io.backend import MilvusBackend, open_lite_backend
from llama_stack_milvus.vector_io.config import InlineMilvusConfig
from llama_stack_milvus.vector_io.filters import parse_filters
from llama_stack_milvus.vector_io.index import MilvusIndex
from llama_stack_milvus.vector_io.schema import (
    GROUP_KEY,
    JSON_FIELD_LAYOUT,
    AttributeLayout,
    chunk_to_row,
    dense_index,
)

TEXTS = {
    "csv": ("The csv module reads and writes tabular data in comma separated values format.", 2019),
    "json": ("The json module encodes and decodes JSON, a lightweight data interchange format.", 2021),
    "sqlite3": ("sqlite3 is an interface to SQLite, a disk-based database without a separate server.", 2023),
}
embedder = index_tests.embedder
chunk = index_tests.chunk
QUERY = "read a file of comma separated values"
counter = itertools.count()


def config_for(path) -> InlineMilvusConfig:
    return InlineMilvusConfig(db_path=str(path), persistence=index_tests.PERSISTENCE)


def create_0_1_collection(backend: MilvusBackend, name: str, config: InlineMilvusConfig) -> None:
    """The schema llama-stack-milvus 0.1 created (per-store mode): attributes in a JSON field, no dynamic field."""
    client = backend.client
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("row_id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("content", DataType.VARCHAR, max_length=65535, enable_analyzer=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=384)
    schema.add_field("attributes", DataType.JSON)
    schema.add_field("chunk_info", DataType.JSON)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function("content_bm25", FunctionType.BM25, ["content"], ["sparse"]))
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", metric_type="COSINE", **dense_index(config, backend))
    index_params.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(name, schema=schema, index_params=index_params)


def documents(embed, **extra_attributes) -> list:
    vectors = embed([text for text, _ in TEXTS.values()])
    return [
        chunk(text, vector, f"file-{name}", name, topic=name, year=year, **extra_attributes)
        for (name, (text, year)), vector in zip(TEXTS.items(), vectors, strict=True)
    ]


@pytest.fixture
def legacy_file(tmp_path, embedder) -> tuple[InlineMilvusConfig, str]:
    """A Lite file holding one 0.1 store of three chunks."""
    config = config_for(tmp_path / "old.db")
    store_id = f"vs_legacy-{next(counter)}"
    backend = open_lite_backend(config)
    try:
        name = MilvusIndex(backend, store_id, 384, config).collection
        create_0_1_collection(backend, name, config)
        rows = [chunk_to_row(c, JSON_FIELD_LAYOUT) for c in documents(embedder, shelf="a")]
        backend.client.insert(name, rows)
        backend.client.flush(name)
    finally:
        backend.close()
        # pymilvus keeps a Lite file's server (and its lock) until the process exits: migrate runs in another one.
        server_manager_instance.release_server(config.db_path)
    return config, store_id


async def assert_answers_by_attribute(index: MilvusIndex, embed) -> None:
    query = embed([QUERY])[0]
    everything = await index.query_vector(query, 3, 0.0)
    assert [c.chunk_id for c in everything.chunks][0] == "csv"
    assert {c.chunk_id: c.metadata for c in everything.chunks}["csv"] == {
        "document_id": "file-csv",
        "topic": "csv",
        "year": 2019,
        "shelf": "a",
    }
    recent = await index.query_vector(query, 3, 0.0, parse_filters({"type": "gte", "key": "year", "value": 2021}))
    assert sorted(c.chunk_id for c in recent.chunks) == ["json", "sqlite3"]
    by_topic = await index.query_keyword(
        QUERY, 3, 0.0, parse_filters({"type": "eq", "key": "topic", "value": "sqlite3"})
    )
    assert [c.chunk_id for c in by_topic.chunks] == ["sqlite3"]
    either = {
        "type": "or",
        "filters": [{"type": "eq", "key": "topic", "value": "json"}, {"type": "lt", "key": "year", "value": 2020}],
    }
    fused = await index.query_hybrid(query, QUERY, 3, 0.0, "rrf", {"impact_factor": 60}, parse_filters(either))
    assert sorted(c.chunk_id for c in fused.chunks) == ["csv", "json"]


async def test_a_0_1_collection_is_searched_filtered_and_extended_in_place(legacy_file, embedder) -> None:
    config, store_id = legacy_file
    backend = open_lite_backend(config)
    try:
        index = MilvusIndex(backend, store_id, 384, config)
        await index.create()  # exists: kept as it is
        await assert_answers_by_attribute(index, embedder)
        assert index.layout == JSON_FIELD_LAYOUT

        text = "The zipfile module reads and writes ZIP archives of comma separated values files."
        await index.add_chunks([chunk(text, embedder([text])[0], "file-zip", "zip", topic="zip", year=2025)])
        newest = await index.query_vector(
            embedder([QUERY])[0], 5, 0.0, parse_filters({"type": "gt", "key": "year", "value": 2024})
        )
        assert [(c.chunk_id, c.metadata["topic"]) for c in newest.chunks] == [("zip", "zip")]
        fields = {f["name"] for f in backend.client.describe_collection(index.collection)["fields"]}
        assert "attributes" in fields  # nothing was rewritten behind the user's back
    finally:
        backend.close()


async def test_migrate_rewrites_a_0_1_collection_in_the_dynamic_layout(legacy_file, tmp_path, embedder) -> None:
    config, store_id = legacy_file
    for command in (
        ["export", "--from-db", config.db_path, "--out", tmp_path / "dump"],
        ["import", "--in", tmp_path / "dump", "--to-db", tmp_path / "new.db"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "llama_stack_milvus.migrate", *command], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert "1 collections, 3 rows" in done.stdout

    new_config = config_for(tmp_path / "new.db")
    backend = open_lite_backend(new_config)
    try:
        index = MilvusIndex(backend, store_id, 384, new_config)
        assert await index.count() == 3
        await assert_answers_by_attribute(index, embedder)
        assert index.layout == AttributeLayout(json_field=False, group_key=True)
        rows = backend.client.query(index.collection, filter="", output_fields=[GROUP_KEY], limit=10)
        assert sorted(row[GROUP_KEY] for row in rows) == sorted(f"file-{name}" for name in TEXTS)
        description = backend.client.describe_collection(index.collection)
        assert description["enable_dynamic_field"]
        assert "attributes" not in {f["name"] for f in description["fields"]}
    finally:
        backend.close()
