"""Stores, their files and their search results survive a restart of the server on the same data dir.

The built-in Milvus provider loses its stores on restart (and then answers searches with an empty 200);
these tests hold ours to the opposite, and check that writes after a restart work and persist.
"""

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import testdocs
from llama_stack_client import LlamaStackClient

pytestmark = pytest.mark.server

MODES = ["vector", "keyword", "hybrid"]
BEFORE = ["floating_point", "memory", "dictionaries", "gil"]  # attached before the restart
DELETED_BEFORE = "gil"  # detached before the restart
AFTER = "windows"  # attached after the restart


def make_client(server) -> LlamaStackClient:
    return LlamaStackClient(base_url=server.base_url, timeout=120, max_retries=0)


def attach(client, store_id: str, file_id: str, attributes: dict[str, Any]):
    result = client.vector_stores.files.create(store_id, file_id=file_id, attributes=attributes)
    deadline = time.monotonic() + 120
    while result.status == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.5)
        result = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
    return result


def run_searches(client, store_id: str) -> dict[tuple, list[tuple[str, float]]]:
    """(query key, mode, ranker) -> [(file id, score)] for a fixed set of searches."""
    results = {}
    for key in BEFORE:
        for mode, ranking in [(m, None) for m in MODES] + [("hybrid", {"ranker": "weighted", "alpha": 0.6})]:
            kwargs = {"ranking_options": ranking} if ranking else {}
            hits = client.vector_stores.search(
                store_id, query=testdocs.BY_KEY[key].question, search_mode=mode, max_num_results=10, **kwargs
            ).data
            results[(key, mode, json.dumps(ranking))] = [(hit.file_id, hit.score) for hit in hits]
    return results


def count_chunks(client, store_id: str, file_id: str, query: str) -> int:
    hits = client.vector_stores.search(
        store_id,
        query=query,
        search_mode="vector",
        max_num_results=50,
        filters={"type": "eq", "key": "file_id", "value": file_id},
    ).data
    return len(hits)


@dataclass
class Before:
    store_id: str
    empty_store_id: str
    deleted_store_id: str
    file_ids: dict[str, str] = field(default_factory=dict)
    searches: dict = field(default_factory=dict)
    chunk_counts: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def server(make_server):
    server = make_server("restart")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def before(server) -> Before:
    """Builds stores, records what searches return, then restarts the server on the same data dir."""
    client = make_client(server)
    store_id = client.vector_stores.create(name="survives-restart").id
    state = Before(
        store_id=store_id,
        empty_store_id=client.vector_stores.create(name="empty-survives-restart").id,
        deleted_store_id=client.vector_stores.create(name="deleted-before-restart").id,
    )
    for key in BEFORE:
        doc = testdocs.BY_KEY[key]
        state.file_ids[key] = client.files.create(file=(doc.filename, doc.data()), purpose="assistants").id
        assert attach(client, store_id, state.file_ids[key], doc.attributes).status == "completed"
        state.chunk_counts[key] = count_chunks(client, store_id, state.file_ids[key], doc.question)
        assert state.chunk_counts[key] > 0
    client.vector_stores.files.delete(state.file_ids[DELETED_BEFORE], vector_store_id=store_id)
    doc = testdocs.BY_KEY["random"]
    side_file = client.files.create(file=(doc.filename, doc.data()), purpose="assistants").id
    assert attach(client, state.deleted_store_id, side_file, {}).status == "completed"
    assert client.vector_stores.delete(state.deleted_store_id).deleted
    state.searches = run_searches(client, store_id)
    assert all(state.searches.values()), "every search finds something before the restart"
    client.close()

    server.restart()
    return state


def live_keys() -> list[str]:
    return [key for key in BEFORE if key != DELETED_BEFORE]


def test_stores_are_listed_after_restart(server, before):
    client = make_client(server)
    listed = {store.id for store in client.vector_stores.list(limit=100)}
    assert {before.store_id, before.empty_store_id} <= listed
    assert before.deleted_store_id not in listed
    store = client.vector_stores.retrieve(before.store_id)
    assert store.name == "survives-restart"
    assert store.file_counts.completed == len(live_keys())


def test_files_are_listed_and_readable_after_restart(server, before):
    client = make_client(server)
    listed = {f.id: f for f in client.vector_stores.files.list(before.store_id, limit=100)}
    assert set(listed) == {before.file_ids[key] for key in live_keys()}
    for key in live_keys():
        assert listed[before.file_ids[key]].status == "completed"
        content = client.vector_stores.files.content(before.file_ids[key], vector_store_id=before.store_id)
        text = testdocs.normalise(" ".join(item.text for item in content.data))
        assert testdocs.normalise(testdocs.BY_KEY[key].phrase) in text


def test_searches_return_the_same_files_and_scores_after_restart(server, before):
    client = make_client(server)
    after = run_searches(client, before.store_id)
    assert after.keys() == before.searches.keys()
    for search_key, expected in before.searches.items():
        got = after[search_key]
        assert [file_id for file_id, _ in got] == [file_id for file_id, _ in expected], search_key
        for (_, score), (_, expected_score) in zip(got, expected, strict=True):
            assert score == pytest.approx(expected_score, abs=1e-4), search_key
    deleted = before.file_ids[DELETED_BEFORE]
    assert all(deleted not in {file_id for file_id, _ in hits} for hits in after.values())


def test_filters_still_hold_after_restart(server, before):
    client = make_client(server)
    for mode in MODES:
        hits = client.vector_stores.search(
            before.store_id,
            query=testdocs.BY_KEY["memory"].question,
            search_mode=mode,
            max_num_results=50,
            filters={"type": "gte", "key": "year", "value": 2021},
        ).data
        assert hits, mode
        assert all(hit.attributes["year"] >= 2021 for hit in hits), mode
        assert before.file_ids["memory"] in {hit.file_id for hit in hits}, mode


@pytest.mark.parametrize("mode", MODES)
def test_empty_store_is_still_searchable_after_restart(server, before, mode):
    client = make_client(server)
    page = client.vector_stores.search(before.empty_store_id, query="anything at all", search_mode=mode)
    assert page.data == []


def test_reattach_after_restart_does_not_duplicate(server, before):
    client = make_client(server)
    key = "dictionaries"
    doc = testdocs.BY_KEY[key]
    assert attach(client, before.store_id, before.file_ids[key], doc.attributes).status == "completed"
    assert count_chunks(client, before.store_id, before.file_ids[key], doc.question) == before.chunk_counts[key]
    listed = [f.id for f in client.vector_stores.files.list(before.store_id, limit=100)]
    assert sorted(listed) == sorted(before.file_ids[k] for k in live_keys())


def test_attach_after_restart_works_and_persists(server, before):
    client = make_client(server)
    doc = testdocs.BY_KEY[AFTER]
    file_id = client.files.create(file=(doc.filename, doc.data()), purpose="assistants").id
    assert attach(client, before.store_id, file_id, doc.attributes).status == "completed"
    for mode in MODES:
        hits = client.vector_stores.search(before.store_id, query=doc.question, search_mode=mode).data
        assert hits[0].file_id == file_id, mode
    n = count_chunks(client, before.store_id, file_id, doc.question)
    client.close()

    server.restart()
    client = make_client(server)
    assert count_chunks(client, before.store_id, file_id, doc.question) == n
    assert client.vector_stores.search(before.store_id, query=doc.question).data[0].file_id == file_id
    assert (
        count_chunks(client, before.store_id, before.file_ids["memory"], testdocs.BY_KEY["memory"].question)
        == before.chunk_counts["memory"]
    )


LIST_COLLECTIONS = """
import json, sys
from pymilvus import MilvusClient
print(json.dumps(MilvusClient(uri=sys.argv[1]).list_collections()))
"""


def test_deleted_store_has_no_milvus_collection(server, before):
    """Looks into the Milvus Lite file itself, with the server stopped (Lite serves one process at a time)."""
    from llama_stack_milvus.vector_io.schema import collection_name_for

    server.stop()
    try:
        result = subprocess.run(
            [sys.executable, "-c", LIST_COLLECTIONS, str(server.data_dir / "milvus.db")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        collections = set(json.loads(result.stdout.strip().splitlines()[-1]))
    finally:
        server.start()
    assert collection_name_for(before.store_id) in collections
    assert collection_name_for(before.empty_store_id) in collections
    assert collection_name_for(before.deleted_store_id) not in collections
    # the server still serves the surviving store after this third start
    client = make_client(server)
    assert client.vector_stores.search(before.store_id, query=testdocs.BY_KEY["memory"].question).data
