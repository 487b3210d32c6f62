"""Milvus Lite 3.x searches with our cached live rows and attribute columns (vector_io/lite_live_rows.py,
lite_meta_filters.py) return exactly what Lite's own code does, through upserts, deletes (pending and flushed),
flushes, compactions and filters."""

import contextlib
import importlib.metadata
import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from llama_stack_milvus.vector_io import lite_bm25, lite_live_rows, lite_meta_filters

pytestmark = pytest.mark.skipif(
    importlib.metadata.version("milvus-lite") != "3.2.2", reason="lite_live_rows repeats Milvus Lite 3.2.2 only"
)

DIM = 8
WORDS = "milvus lite search vector keyword hybrid segment flush delete upsert file store".split()
FILTERS = [None, 'colour == "red"', 'colour == "blue" and rank > 10']
# Schema fields, dynamic keys, both, the raw dynamic field, everything, the key only, all by default.
OUTPUT_FIELDS = [["content"], ["colour"], ["content", "rank"], ["$meta"], ["*"], ["id"], None]


@contextlib.contextmanager
def lite_own_paths() -> Iterator[None]:
    from milvus_lite.engine import collection
    from milvus_lite.search.filter.eval import hybrid_backend

    ours = collection.execute_search_with_index, collection.Collection._search_sparse, hybrid_backend._augment_table
    collection.execute_search_with_index = ours[0].original
    collection.Collection._search_sparse = ours[1].original
    hybrid_backend._augment_table = ours[2].original
    try:
        yield
    finally:
        collection.execute_search_with_index, collection.Collection._search_sparse, hybrid_backend._augment_table = ours


def new_collection(db):
    from milvus_lite.schema.types import CollectionSchema, DataType, FieldSchema, Function, FunctionType

    schema = CollectionSchema(
        fields=[
            FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=64),
            FieldSchema("vector", DataType.FLOAT_VECTOR, dim=DIM),
            FieldSchema("content", DataType.VARCHAR, max_length=1000, enable_analyzer=True),
            FieldSchema("sparse", DataType.SPARSE_FLOAT_VECTOR),
        ],
        enable_dynamic_field=True,
        functions=[Function("bm25", FunctionType.BM25, ["content"], ["sparse"])],
    )
    created = db.create_collection("c", schema)
    created.create_index("vector", {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 8}})
    created.create_index("sparse", {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "BM25"})
    created.load()
    return created


@pytest.fixture
def db(tmp_path):
    from milvus_lite.db import MilvusLite

    assert lite_bm25.install() and lite_live_rows.install() and lite_meta_filters.install()
    opened = MilvusLite(str(tmp_path))
    yield opened
    opened.close()


@pytest.fixture
def collection(db):
    return new_collection(db)


def rows(ids: range, rng: np.random.Generator, version: int) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "vector": rng.standard_normal(DIM).tolist(),
            "content": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) + f" v{version}",
            "colour": ("red", "blue")[i % 2],
            "rank": i % 17,
        }
        for i in ids
    ]


def assert_same_as_lite(collection, rng: np.random.Generator) -> int:
    """Every search mode, with and without filters, at several depths: ours against Lite's own, once the background
    compactions and index builds the last flush started are done (they change what a search reads)."""
    collection._wait_for_bg(timeout=60)
    output_fields = itertools.cycle(OUTPUT_FIELDS)
    compared = 0
    for expr in FILTERS:
        for top_k in (1, 7, 60):
            dense = [rng.standard_normal(DIM).tolist()]
            sparse = [" ".join(rng.choice(WORDS, size=3))]
            for anns_field, queries in (("vector", dense), ("sparse", sparse)):
                fields = next(output_fields)
                search = {"top_k": top_k, "expr": expr, "anns_field": anns_field, "output_fields": fields}
                ours = collection.search(queries, **search)
                with lite_own_paths():
                    theirs = collection.search(queries, **search)
                assert ours == theirs, search
                compared += len(ours[0])
    return compared


def test_same_results_as_milvus_lite_through_writes_deletes_flushes_and_compactions(collection) -> None:
    rng = np.random.default_rng(7)
    for batch in range(6):  # six flushed segments: compaction merges some in the background
        collection.insert(rows(range(batch * 40, batch * 40 + 60), rng, batch))  # 20 keys of each batch are upserts
        collection.flush()
        assert assert_same_as_lite(collection, rng) > 0

    collection.upsert(rows(range(0, 300, 9), rng, 99))  # newer versions in the memtable
    collection.delete([f"r{i}" for i in range(3, 300, 5)])  # pending deletes in the memtable
    assert assert_same_as_lite(collection, rng) > 0
    live = collection.search([[1.0] * DIM], top_k=1000, anns_field="vector")[0]
    assert {hit["id"] for hit in live}.isdisjoint({f"r{i}" for i in range(3, 300, 5)})

    collection.flush()  # the deletes become tombstones of flushed segments
    assert assert_same_as_lite(collection, rng) > 0
    collection.delete(["r0", "r1"])
    collection.flush()
    assert assert_same_as_lite(collection, rng) > 0
    deleted = {f"r{i}" for i in range(3, 300, 5)} | {"r0", "r1"}
    for anns_field, query in (("vector", [1.0] * DIM), ("sparse", "milvus lite search v0 v1 v99")):
        hits = collection.search([query], top_k=1000, anns_field=anns_field)[0]
        assert len(hits) > 100 and {hit["id"] for hit in hits}.isdisjoint(deleted)


def test_live_rows_and_attribute_columns_are_computed_once_per_segment_set(collection) -> None:
    rng = np.random.default_rng(3)
    collection.insert(rows(range(100), rng, 0))
    collection.flush()
    collection._wait_for_bg(timeout=60)
    query = [rng.standard_normal(DIM).tolist()]
    collection.search(query, top_k=5, anns_field="vector")
    cached = lite_live_rows._cache[tuple((s.partition, s.file_path) for s in collection._segment_cache.values())]
    collection.search(["milvus lite"], top_k=5, anns_field="sparse")
    again = lite_live_rows._cache[tuple((s.partition, s.file_path) for s in collection._segment_cache.values())]
    assert again[2] is cached[2]
    collection.search(query, top_k=5, anns_field="vector", expr='colour == "red"')
    (segment,) = collection._segment_cache.values()
    columns = lite_meta_filters._augmented[id(segment.table)][frozenset({"colour"})]
    collection.search(query, top_k=5, anns_field="vector", expr='colour == "blue"')
    assert lite_meta_filters._augmented[id(segment.table)][frozenset({"colour"})] is columns
    collection.delete(["r5"])
    collection.flush()  # a tombstone: the same segments, other live rows
    hits = collection.search(["milvus lite search vector keyword v0"], top_k=100, anns_field="sparse")[0]
    assert "r5" not in {hit["id"] for hit in hits} and len(hits) == 99


def test_a_collection_made_again_under_its_name_is_not_mistaken_for_the_old_one(db) -> None:
    """Its segment files can have the old ones' names; the live rows kept for those must not be used."""
    rng = np.random.default_rng(5)
    old = new_collection(db)
    for keys in (range(50), range(25)):  # the second segment holds newer versions of r0-r24
        old.insert(rows(keys, rng, 0))
        old.flush()
    assert assert_same_as_lite(old, rng) > 0
    files = sorted(segment.file_path for segment in old._segment_cache.values())
    db.drop_collection("c")
    new = new_collection(db)
    for keys in (range(50), range(50, 75)):
        new.insert(rows(keys, rng, 1))
        new.flush()
    assert sorted(segment.file_path for segment in new._segment_cache.values()) == files
    assert assert_same_as_lite(new, rng) > 0
    assert len(new.search(["milvus lite search v1"], top_k=100, anns_field="sparse")[0]) == 75
