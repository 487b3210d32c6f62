"""MilvusIndex against Milvus Lite in-process (3.x by default; CI reruns this file on Lite 2.5)."""

import argparse
import asyncio
import csv
import importlib.metadata
import inspect
import itertools
import json
import operator
import os
import sqlite3
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_stack_api import ChunkForDeletion, ChunkMetadata, EmbeddedChunk

from llama_stack_milvus.errors import MilvusBackendError
from llama_stack_milvus.offline import ensure_embedding_model
from llama_stack_milvus.vector_io.backend import MilvusBackend, open_lite_backend
from llama_stack_milvus.vector_io.config import InlineMilvusConfig
from llama_stack_milvus.vector_io.filters import parse_filters
from llama_stack_milvus.vector_io.index import MilvusIndex
from llama_stack_milvus.vector_io.schema import GROUP_KEY
from llama_stack_milvus.vector_io.search_options import SEARCH_OPTIONS, SearchOptions

PERSISTENCE = {"namespace": "vector_io::milvus", "backend": "kv_default"}
# Real documentation text available offline everywhere: docstrings of standard-library modules.
DOCUMENTS = {
    name: inspect.getdoc(module)
    for name, module in {"argparse": argparse, "asyncio": asyncio, "csv": csv, "json": json, "sqlite3": sqlite3}.items()
}
counter = itertools.count()


@pytest.fixture(scope="session")
def embedder():
    ensure_embedding_model()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    return lambda texts: model.encode(texts, normalize_embeddings=True)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    config = InlineMilvusConfig(db_path=str(tmp_path_factory.mktemp("lite") / "milvus.db"), persistence=PERSISTENCE)
    backend = open_lite_backend(config)
    yield backend
    backend.close()


async def new_index(backend, dimension: int = 384) -> MilvusIndex:
    config = InlineMilvusConfig(db_path="unused", persistence=PERSISTENCE)
    index = MilvusIndex(backend, f"vs_test-{next(counter)}", dimension, config)
    await index.create()
    return index


def chunk(text: str, embedding, document_id: str, chunk_id: str, **attributes) -> EmbeddedChunk:
    return EmbeddedChunk(
        content=text,
        chunk_id=chunk_id,
        metadata={"document_id": document_id, **attributes},
        chunk_metadata=ChunkMetadata(chunk_id=chunk_id, document_id=document_id),
        embedding=[float(x) for x in embedding],
        embedding_model="all-MiniLM-L6-v2",
        embedding_dimension=len(embedding),
    )


def test_runs_against_the_expected_lite_line() -> None:
    expected = os.environ.get("LLAMA_STACK_MILVUS_LITE_LINE", "3")
    assert importlib.metadata.version("milvus-lite").startswith(expected + ".")


@pytest.fixture(scope="module")
async def docs_index(backend, embedder):
    index = await new_index(backend)
    names = list(DOCUMENTS)
    vectors = embedder([DOCUMENTS[n] for n in names])
    await index.add_chunks(
        [chunk(DOCUMENTS[n], v, f"file-{n}", f"c-{n}", module=n) for n, v in zip(names, vectors, strict=True)]
    )
    return index


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("parse command-line arguments and options", "argparse"),
        ("read and write comma separated values files", "csv"),
        ("serialize python objects to JavaScript Object Notation", "json"),
    ],
)
async def test_every_mode_finds_the_right_document(docs_index, embedder, query, expected) -> None:
    embedding = embedder([query])[0]
    vector = await docs_index.query_vector(embedding, 5, 0.0)
    keyword = await docs_index.query_keyword(query, 5, 0.0)
    hybrid = await docs_index.query_hybrid(embedding, query, 5, 0.0, "rrf", {"impact_factor": 60})
    weighted = await docs_index.query_hybrid(embedding, query, 5, 0.0, "weighted", {"alpha": 0.5})
    for response in (vector, keyword, hybrid, weighted):
        assert response.chunks[0].metadata["module"] == expected
        assert response.scores == sorted(response.scores, reverse=True)
    assert all(score > 0 for score in keyword.scores)
    assert all(0 <= score <= 1 for score in hybrid.scores + weighted.scores)


async def test_score_threshold_drops_weaker_hits(docs_index, embedder) -> None:
    query = "parse command-line arguments"
    everything = await docs_index.query_vector(embedder([query])[0], 5, 0.0)
    threshold = (everything.scores[0] + everything.scores[1]) / 2
    strong = await docs_index.query_vector(embedder([query])[0], 5, threshold)
    assert [c.chunk_id for c in strong.chunks] == [everything.chunks[0].chunk_id]


async def test_upsert_replaces_and_documents_keep_their_own_rows(backend, embedder) -> None:
    index = await new_index(backend)
    vectors = embedder(["cats purr", "dogs bark"])
    first = [chunk("cats purr", vectors[0], "file-a", "c1"), chunk("dogs bark", vectors[1], "file-a", "c2")]
    await index.add_chunks(first)
    await index.add_chunks(first)
    assert await index.count() == 2
    # The same chunk ids under another document (an identical second file) are rows of their own.
    await index.add_chunks([chunk(c.content, c.embedding, "file-b", c.chunk_id) for c in first])
    assert await index.count() == 4
    await index.delete_chunks(
        [ChunkForDeletion(chunk_id="c1", document_id="file-b"), ChunkForDeletion(chunk_id="c2", document_id="file-b")]
    )
    assert await index.count() == 2
    left = await index.query_keyword("cats", 5, 0.0)
    assert [c.document_id for c in left.chunks] == ["file-a"]


async def test_an_empty_store_answers_every_mode_with_nothing(backend, embedder) -> None:
    index = await new_index(backend)
    embedding = embedder(["anything"])[0]
    assert (await index.query_vector(embedding, 10, 0.0)).chunks == []
    assert (await index.query_keyword("anything", 10, 0.0)).chunks == []
    assert (await index.query_hybrid(embedding, "anything", 10, 0.0, "rrf", {})).chunks == []


async def test_milvus_failures_surface_as_errors_naming_milvus(backend, embedder) -> None:
    index = await new_index(backend)
    await index.add_chunks([chunk("cats purr", embedder(["cats purr"])[0], "file-a", "c1")])
    await index.query_vector(embedder(["cats"])[0], 3, 0.0)
    backend.client.drop_collection(index.collection)
    with pytest.raises(MilvusBackendError, match="Milvus"):
        await index.query_vector(embedder(["cats"])[0], 3, 0.0)
    fresh = await new_index(backend, dimension=8)
    with pytest.raises(MilvusBackendError, match="Milvus"):
        await fresh.add_chunks([chunk("wrong size", np.ones(5), "file-a", "c1")])


async def test_reopening_the_file_keeps_rows_searchable(tmp_path, embedder) -> None:
    config = InlineMilvusConfig(db_path=str(tmp_path / "milvus.db"), persistence=PERSISTENCE)
    backend = open_lite_backend(config)
    index = MilvusIndex(backend, "vs_reopen", 384, config)
    await index.create()
    await index.add_chunks([chunk("cats purr", embedder(["cats purr"])[0], "file-a", "c1")])
    backend.close()
    reopened = MilvusIndex(open_lite_backend(config), "vs_reopen", 384, config)
    found = await reopened.query_vector(embedder(["cats"])[0], 3, 0.0)
    assert [c.chunk_id for c in found.chunks] == ["c1"]
    reopened.backend.close()


# Attribute filters, checked against a Python evaluation of the same filter on the same rows.
ROWS = [{"n": n, "s": s, "b": n % 3 == 0} for n, s in zip(range(12), "abcdefabcdef", strict=True)]
OPS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
leaf = st.one_of(
    st.builds(
        lambda op, v: {"type": op, "key": "n", "value": v},
        st.sampled_from(list(OPS)),
        st.one_of(st.integers(-2, 13), st.floats(-2, 13).map(lambda x: round(x, 1))),
    ),
    st.builds(
        lambda op, v: {"type": op, "key": "s", "value": v}, st.sampled_from(list(OPS)), st.sampled_from(list("abcdefg"))
    ),
    st.builds(lambda op, v: {"type": op, "key": "b", "value": v}, st.sampled_from(["eq", "ne"]), st.booleans()),
    st.builds(
        lambda op, v: {"type": op, "key": "n", "value": v},
        st.sampled_from(["in", "nin"]),
        st.lists(st.integers(0, 12), min_size=1, max_size=4),
    ),
    st.builds(
        lambda op, v: {"type": op, "key": "s", "value": v},
        st.sampled_from(["in", "nin"]),
        st.lists(st.sampled_from(list("abcxyz")), min_size=1, max_size=3),
    ),
)
trees = st.recursive(
    leaf,
    lambda kids: st.builds(
        lambda t, f: {"type": t, "filters": f}, st.sampled_from(["and", "or"]), st.lists(kids, min_size=1, max_size=3)
    ),
    max_leaves=6,
)


def matches(node: dict, row: dict) -> bool:
    if node["type"] in ("and", "or"):
        results = [matches(child, row) for child in node["filters"]]
        return all(results) if node["type"] == "and" else any(results)
    value = row[node["key"]]
    if node["type"] == "in":
        return value in node["value"]
    if node["type"] == "nin":
        return value not in node["value"]
    return OPS[node["type"]](value, node["value"])


@pytest.fixture(scope="module")
async def attribute_index(backend, embedder):
    index = await new_index(backend)
    text = "shared words about the standard library"
    vector = embedder([text])[0]
    await index.add_chunks([chunk(text, vector, f"file-{i}", f"c{i}", **row) for i, row in enumerate(ROWS)])
    return index, vector, text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
async def test_filters_select_exactly_the_matching_rows_in_every_mode(attribute_index, tree) -> None:
    index, vector, text = attribute_index
    expected = {f"c{i}" for i, row in enumerate(ROWS) if matches(tree, row)}
    parsed = parse_filters(tree)
    for response in (
        await index.query_vector(vector, 50, 0.0, parsed),
        await index.query_keyword(text, 50, 0.0, parsed),
        await index.query_hybrid(vector, text, 50, 0.0, "rrf", {}, parsed),
    ):
        assert {c.chunk_id for c in response.chunks} == expected, tree


hostile_text = st.one_of(
    st.sampled_from(['"', "'", "\\", '\\"', '" or 1==1 or "', ") or (1==1", '"]) or true or (["', "a\tb", "%"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t"), max_size=20),
)


@pytest.fixture(scope="module")
async def hostile_index(backend):
    return await new_index(backend, dimension=4), []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=hostile_text)
async def test_hostile_values_are_matched_literally(hostile_index, value) -> None:
    index, stored = hostile_index
    row = f"h{len(stored)}"
    stored.append((row, value))
    await index.add_chunks([chunk("text", [1.0, 0.5, 0.25, 0.125], "file-h", row, v=value)])
    found = await index.query_vector(
        np.array([1.0, 0.5, 0.25, 0.125]), 1000, 0.0, parse_filters({"type": "eq", "key": "v", "value": value})
    )
    assert {c.chunk_id for c in found.chunks} == {r for r, v in stored if v == value}


async def test_health_reports_ok_while_milvus_answers_and_error_after(tmp_path) -> None:
    from llama_stack_milvus.vector_io.adapter import MilvusVectorIOAdapter

    config = InlineMilvusConfig(db_path=str(tmp_path / "milvus.db"), persistence=PERSISTENCE)
    adapter = MilvusVectorIOAdapter(config, inference_api=object(), files_api=None)
    adapter.backend = open_lite_backend(config)
    assert (await adapter.health())["status"] == "OK"
    adapter.backend.close()
    unhealthy = await adapter.health()
    assert unhealthy["status"] == "Error" and "Milvus" in unhealthy["message"]


def lite_major() -> int:
    return int(importlib.metadata.version("milvus-lite").split(".")[0])


@pytest.fixture(scope="module")
def shared_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("shared") / "milvus.db"
    return InlineMilvusConfig(db_path=str(path), persistence=PERSISTENCE, collection_mode="shared")


@pytest.mark.skipif(lite_major() < 3, reason="Lite 2.5 cannot filter on a partition key (tested below)")
async def test_shared_collection_keeps_stores_apart(shared_config, embedder) -> None:
    backend = open_lite_backend(shared_config)
    stores = [MilvusIndex(backend, f"vs_shared-{n}", 384, shared_config) for n in range(3)]
    for store in stores:
        await store.create()
    text = "Cats are small domesticated carnivorous mammals."
    vector = embedder([text])[0]
    # The same file (same chunk and document ids) in every store: only the store scope tells them apart.
    for n, store in enumerate(stores):
        await store.add_chunks([chunk(text, vector, "file-same", "c1", owner=n), chunk(text, vector, "file-2", "c2")])
    assert len({store.collection for store in stores}) == 1
    for n, store in enumerate(stores):
        for response in (
            await store.query_vector(vector, 50, 0.0),
            await store.query_keyword("cats", 50, 0.0),
            await store.query_hybrid(vector, "cats", 50, 0.0, "rrf", {}),
        ):
            assert len(response.chunks) == 2
            assert {c.metadata.get("owner", n) for c in response.chunks} == {n}
    await stores[0].delete()
    assert await stores[1].count() == 2 and await stores[2].count() == 2
    await stores[1].delete_chunks([ChunkForDeletion(chunk_id="c1", document_id="file-same")])
    assert await stores[1].count() == 1 and await stores[2].count() == 2
    backend.close()


@pytest.mark.skipif(lite_major() >= 3, reason="Lite 3.x supports shared collections (tested above)")
async def test_shared_collection_is_refused_clearly_on_lite_25(shared_config) -> None:
    backend = open_lite_backend(shared_config)
    with pytest.raises(ValueError, match="needs a Milvus server or Milvus Lite 3.x"):
        await MilvusIndex(backend, "vs_shared", 384, shared_config).create()
    backend.close()


async def test_group_by_file_is_one_grouped_milvus_search_and_agrees_with_the_fallback(
    backend, embedder, monkeypatch
) -> None:
    """A new collection keeps each row's file in GROUP_KEY, and a one-hit-per-file vector or keyword search is one
    Milvus grouping search; a collection made without that field is searched deeper until it has k files. Both give
    the same hits; a chunk inserted with no document is a group of its own."""
    pieces = [(name, text[start : start + 300]) for name, text in DOCUMENTS.items() for start in range(0, 1200, 300)]
    vectors = embedder([text for _, text in pieces])
    chunks = [
        chunk(text, vector, f"file-{name}", f"{name}-{i}")
        for i, ((name, text), vector) in enumerate(zip(pieces, vectors, strict=True))
    ]
    # Two copies of the first piece with no document at all: each is its own group.
    chunks += [
        EmbeddedChunk(
            content=pieces[0][1],
            chunk_id=f"loose-{i}",
            metadata={},
            chunk_metadata=ChunkMetadata(chunk_id=f"loose-{i}"),
            embedding=[float(x) for x in vectors[0]],
            embedding_model="all-MiniLM-L6-v2",
            embedding_dimension=384,
        )
        for i in range(2)
    ]
    native = await new_index(backend)
    assert GROUP_KEY in {f["name"] for f in backend.client.describe_collection(native.collection)["fields"]}
    before_grouping = MilvusBackend(
        backend.client, backend.description, replace(backend.capabilities, grouping=False), 30, owns_data=True
    )
    fallback = await new_index(before_grouping)
    assert GROUP_KEY not in {f["name"] for f in backend.client.describe_collection(fallback.collection)["fields"]}
    for index in (native, fallback):
        await index.add_chunks(chunks)
    searches: list[dict] = []
    real_search = backend.client.search
    monkeypatch.setattr(backend.client, "search", lambda **kw: searches.append(kw) or real_search(**kw))
    query, k = pieces[0][1], 4
    token = SEARCH_OPTIONS.set(SearchOptions(group_by_file=True))
    try:
        for mode in ("vector", "keyword"):
            answers = {}
            for index in (native, fallback):
                searches.clear()
                if mode == "vector":
                    found = await index.query_vector(embedder([query])[0], k, None)
                else:
                    found = await index.query_keyword(query, k, None)
                answers[index is native] = [c.chunk_id for c in found.chunks]
                grouped_calls = [s for s in searches if s.get("group_by_field") == GROUP_KEY]
                if index is native:
                    assert (len(searches), len(grouped_calls)) == (1, 1), mode
                else:
                    assert searches and not grouped_calls, mode
            assert answers[True] == answers[False], mode
            groups = [c.split("-")[0] for c in answers[True]]
            assert len(answers[True]) == k and groups.count("loose") <= 2, answers
            assert len({g for g in groups if g != "loose"}) == len([g for g in groups if g != "loose"]), answers
            if mode == "vector":  # the loose copies tie with the first piece: all three lead
                assert sorted(answers[True][:3]) == ["argparse-0", "loose-0", "loose-1"], answers
    finally:
        SEARCH_OPTIONS.reset(token)


async def test_hybrid_reads_legs_as_deep_as_asked_and_returns_only_the_best(backend, embedder) -> None:
    """Our OpenAI search asks a hybrid search for the hits it returns, fused from deeper legs (hybrid_depth): the
    same hits, scores and rows as the first ones of a search that returns that whole depth."""
    paragraphs = [
        paragraph
        for module in (argparse, asyncio, csv, json, sqlite3)
        for paragraph in (inspect.getdoc(module) or "").split("\n\n")
        if len(paragraph) > 40
    ][:40]
    index = await new_index(backend)
    vectors = embedder(paragraphs)
    await index.add_chunks(
        [
            chunk(text, v, f"file-{i % 7}", f"p-{i}", n=i)
            for i, (text, v) in enumerate(zip(paragraphs, vectors, strict=True))
        ]
    )
    query = "how are command line options and arguments parsed"
    embedding = embedder([query])[0]
    whole = await index.query_hybrid(embedding, query, 20, None, "weighted", {"alpha": 0.7})
    token = SEARCH_OPTIONS.set(SearchOptions(explain=True, hybrid_depth=20))
    try:
        best = await index.query_hybrid(embedding, query, 4, None, "weighted", {"alpha": 0.7})
    finally:
        SEARCH_OPTIONS.reset(token)
    assert len(whole.chunks) == 20 and len(best.chunks) == 4
    assert [c.chunk_id for c in best.chunks] == [c.chunk_id for c in whole.chunks[:4]]
    assert best.scores == whole.scores[:4]
    assert [(c.content, c.embedding, c.metadata) for c in best.chunks] == [
        (c.content, c.embedding, c.metadata) for c in whole.chunks[:4]
    ]
    assert {explained["depth"] for explained in best.explanations} == {20}
