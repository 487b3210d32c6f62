"""test_server_restart's suite against distributions/milvus-remote: a restart of the STACK keeps stores, files and
search results, on both real Milvus servers (see test_remote_http for the servers and how 2.3.5 is handled).

The Milvus server keeps running throughout; only `llama stack run` is stopped and started again (new port, same
stack data directory). On Milvus 2.3.5 the searches compared across the restart are vector searches.
"""

from typing import Any

import httpx
import pytest
import test_remote_http as remote
import test_server_restart as suite
import testdocs

from llama_stack_milvus_devtools.milvus import connect

# Fixtures used as they are: test_remote_http's server parametrization, and the restart suite's fixture that builds
# stores and restarts the stack (it uses `server`, replaced below).
milvus = remote.milvus
before = suite.before

pytestmark = pytest.mark.server


def vector_searches(client, store_id: str) -> dict[tuple, list[tuple[str, float]]]:
    """run_searches() without BM25: vector searches, with and without a filter."""
    results = {}
    for key in suite.BEFORE:
        for flt in (None, {"type": "gte", "key": "year", "value": 2019}):
            kwargs = {"filters": flt} if flt else {}
            hits = client.vector_stores.search(
                store_id, query=testdocs.BY_KEY[key].question, search_mode="vector", max_num_results=10, **kwargs
            ).data
            results[(key, "vector", str(flt))] = [(hit.file_id, hit.score) for hit in hits]
    return results


@pytest.fixture(scope="module")
def server(milvus, make_server, measurements):
    """Replaces test_server_restart's inline stack with distributions/milvus-remote on `milvus`."""
    server = remote.start_remote_stack(make_server, measurements, milvus, f"remote-restart-{milvus.kind}")
    with pytest.MonkeyPatch.context() as patch:
        if not remote.has_bm25(milvus):
            patch.setattr(suite, "MODES", ["vector"])
            patch.setattr(suite, "run_searches", vector_searches)
        yield server
    measurements.setdefault(f"stack_restart_s[{milvus.kind}]", []).extend(server.start_seconds[1:])
    server.stop()


def restart_suite_request(name: str, kwargs: dict[str, Any], request) -> tuple[httpx.Client, str, dict[str, Any], bool]:
    """test_empty_store_is_still_searchable_after_restart's keyword/hybrid search (the only parametrized one)."""
    assert name == "test_empty_store_is_still_searchable_after_restart", name
    http_client = httpx.Client(base_url=kwargs["server"].base_url, timeout=120)
    request.addfinalizer(http_client.close)
    return http_client, kwargs["before"].empty_store_id, {"query": "anything at all"}, False


remote.import_tests(suite, globals(), restart_suite_request)


def test_deleted_store_has_no_milvus_collection(server, before, milvus):
    """Replaces the inline test (which opens the Lite file): asks the running Milvus server itself."""
    from llama_stack_milvus.vector_io.schema import collection_name_for

    client = connect(milvus.uri, milvus.token)
    try:
        collections = set(client.list_collections())
    finally:
        client.close()
    assert collection_name_for(before.store_id) in collections
    assert collection_name_for(before.empty_store_id) in collections
    assert collection_name_for(before.deleted_store_id) not in collections
