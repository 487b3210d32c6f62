"""test_server_http's behavioural suite, run against distributions/milvus-remote on two real Milvus servers.

Every test function of test_server_http (and its module fixtures client/http/corpus/hostile) is imported here; only
`stack_server` is replaced: a `llama stack run` of the milvus-remote distribution (`remote::milvus`) pointed at
  - "lite-server": `milvus-lite server` (Milvus Lite 3.x over gRPC; BM25, keyword and hybrid search), and
  - "standalone-2.3.5": the real Milvus standalone 2.3.5 server with authorization (token root:Milvus), no BM25.

On 2.3.5 a keyword or hybrid search must be an HTTP 501 whose message names the server's version and says keyword
and hybrid search need Milvus 2.5 (adapt() swaps those test cases for that check); tests that loop over the modes
inside run their vector searches only (MODES is patched), so vector search with every filter still runs there.
test_remote_restart and test_remote_failures import the helpers below.
"""

import functools
import inspect
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_server_http as suite
import testdocs

ROOT = Path(__file__).resolve().parents[2]
REMOTE_RUN_YAML = ROOT / "distributions" / "milvus-remote" / "run.yaml"
# Test id of each real server -> its llama_stack_milvus_devtools.milvus kind.
MILVUS_KINDS = {"lite-server": "lite", "standalone-2.3.5": "standalone"}
BM25_MODES = ("keyword", "hybrid")

pytestmark = pytest.mark.server

# The suite's module-scoped fixtures, used as they are (they depend on `stack_server`, replaced below).
client, corpus, hostile, http = suite.client, suite.corpus, suite.hostile, suite.http


# ------------------------------------------------------------------------------------------- helpers


def has_bm25(milvus) -> bool:
    """milvus-lite 3.x serves BM25; the standalone server here is Milvus 2.3.5, which has none."""
    return milvus.kind == "lite"


def remote_env(milvus, **extra: str) -> dict[str, str]:
    """Environment that points distributions/milvus-remote at a server from llama_stack_milvus_devtools."""
    return {"MILVUS_URI": milvus.uri, "MILVUS_TOKEN": milvus.token or "", **extra}


def record(measurements: dict[str, list], key: str, value: Any) -> None:
    measurements.setdefault(key, []).append(value)


def skip_unless_standalone_platform(kind: str) -> None:
    if kind == "standalone" and (sys.platform != "linux" or platform.machine() != "x86_64"):
        pytest.skip("PyPI milvus==2.3.5 ships Linux x86-64 binaries only")


def start_remote_stack(make_server, measurements, milvus, name: str, **env: str):
    """A `llama stack run` of distributions/milvus-remote against `milvus`; records how long the start took."""
    server = make_server(name, REMOTE_RUN_YAML, remote_env(milvus, **env))
    record(measurements, f"stack_start_s[{milvus.kind}]", server.start_seconds[-1])
    return server


def assert_bm25_unsupported(http_client: httpx.Client, response: httpx.Response, milvus) -> str:
    """A 501 (the keep-alive connection still serving) naming Milvus, the server's version and Milvus 2.5."""
    message = suite.assert_client_error(http_client, response, 501)
    assert "Milvus" in message and "2.3.5" in message, message
    assert "keyword and hybrid search need Milvus 2.5" in message, message
    assert milvus.uri in message, message
    return message


def adapt(test: Callable, unsupported_request: Callable, fixed_mode: str | None = None) -> Callable:
    """Wraps an imported test: on a server without BM25, a case that searches in keyword or hybrid mode (its
    `mode` argument, or `fixed_mode`) checks instead that such a search is a 501; every other case runs as is.

    unsupported_request(test_name, kwargs, request) -> (httpx client, store id, search body, filter_may_be_invalid)
    builds that search; with filter_may_be_invalid, a 400 "Invalid filters" (what the original test accepts, and what
    the same filter gets in vector mode) is accepted as well: filters are validated before Milvus is asked.
    pytest reads the wrapper's __signature__ (the test's arguments plus `request`) to supply fixtures, and
    functools.wraps carries the test's parametrize marks over.
    """
    signature = inspect.signature(test)
    assert "request" not in signature.parameters, test.__name__

    @functools.wraps(test)
    def wrapper(request, **kwargs):
        mode = kwargs.get("mode", fixed_mode)
        milvus = request.getfixturevalue("milvus")
        if mode in BM25_MODES and not has_bm25(milvus):
            http_client, store_id, body, filter_may_be_invalid = unsupported_request(test.__name__, kwargs, request)
            response = suite.search_http(http_client, store_id, {**body, "search_mode": mode})
            if filter_may_be_invalid and response.status_code == 400:
                message = suite.assert_client_error(http_client, response, 400)
                assert message.startswith("Invalid filters"), message
                in_vector_mode = suite.search_http(http_client, store_id, {**body, "search_mode": "vector"})
                assert suite.assert_client_error(http_client, in_vector_mode, 400) == message
                return None
            assert_bm25_unsupported(http_client, response, milvus)
            return None
        return test(**kwargs)

    request_parameter = inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY)
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), request_parameter])
    return wrapper


def import_tests(module, namespace: dict, unsupported_request: Callable, **options: dict[str, Any]) -> None:
    """Copies every test_* function of `module` into `namespace`, wrapped by adapt().

    options: test name -> {"keep": True} (run unchanged everywhere: requests rejected before Milvus is asked)
    or {"fixed_mode": mode} (a test without a `mode` argument that always searches in that mode).
    """
    for name, obj in vars(module).items():
        if not (name.startswith("test_") and callable(obj)):
            continue
        option = options.get(name, {})
        if option.get("keep"):
            namespace[name] = obj
        else:
            namespace[name] = adapt(obj, unsupported_request, option.get("fixed_mode"))
    unknown = set(options) - set(vars(module))
    assert not unknown, f"options for tests that {module.__name__} does not have: {unknown}"


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=list(MILVUS_KINDS))
def milvus(request, milvus_factory):
    """The real Milvus server of this parametrization (shared by the session; nothing here stops it)."""
    kind = MILVUS_KINDS[request.param]
    skip_unless_standalone_platform(kind)
    return milvus_factory(kind)


@pytest.fixture(scope="module")
def stack_server(milvus, make_server, measurements):
    """Replaces test_server_http's inline stack with distributions/milvus-remote on `milvus`."""
    server = start_remote_stack(make_server, measurements, milvus, f"remote-http-{milvus.kind}")
    with pytest.MonkeyPatch.context() as patch:
        if not has_bm25(milvus):
            # Tests that loop over the modes inside (duplicates, deletions) search in vector mode only.
            patch.setattr(suite, "MODES", ["vector"])
        yield server
    server.stop()


# ----------------------------------------------------------------------------------------------- tests


def http_suite_request(name: str, kwargs: dict[str, Any], request) -> tuple[httpx.Client, str, dict[str, Any], bool]:
    """The keyword/hybrid search a test_server_http case would make, on the store it would use."""
    http_client = request.getfixturevalue("http")
    key = kwargs.get("key") if kwargs.get("key") in testdocs.BY_KEY else kwargs.get("target")
    body: dict[str, Any] = {"query": testdocs.BY_KEY[key].question if key else "floating point numbers"}
    if name == "test_hostile_filter_value_is_matched_literally":
        body["filters"] = {"type": "eq", "key": "label", "value": kwargs["value"]}
    elif name == "test_hostile_filter_key_is_matched_literally":
        body["filters"] = {"type": "eq", "key": kwargs["key"], "value": "yes"}
    elif name == "test_injected_filter_key_matches_nothing":
        body["filters"] = {"type": "eq", "key": kwargs["key"], "value": "plain"}
    elif "flt" in kwargs:
        body["filters"] = kwargs["flt"]
    if kwargs.get("ranking_options"):
        body["ranking_options"] = kwargs["ranking_options"]
    if name == "test_largest_allowed_max_num_results_is_accepted":
        body["max_num_results"] = suite.MAX_RESULTS
    if "hostile" in kwargs:
        store_id = kwargs["hostile"].store_id
    elif "corpus" in kwargs:
        store_id = kwargs["corpus"].store_id
    else:  # test_empty_store_search_is_an_empty_list: an empty store
        store_id = kwargs["client"].vector_stores.create(name="empty-bm25-unsupported").id
    return http_client, store_id, body, "hostile" in kwargs  # hostile_search() accepts a 400 "Invalid filters"


import_tests(
    suite,
    globals(),
    http_suite_request,
    # Rejected with a 400 before Milvus is asked, whatever the server (checked on 2.3.5 as well).
    test_invalid_search_parameters_are_a_400_naming_the_field={"keep": True},
    test_malformed_filter_is_a_400_naming_the_problem={"keep": True},
    test_hybrid_rankers_find_the_document_with_scores_in_unit_range={"fixed_mode": "hybrid"},
    test_hybrid_without_ranking_options_is_the_recommended_weighted_fusion={"fixed_mode": "hybrid"},
    test_largest_allowed_max_num_results_is_accepted={"fixed_mode": "hybrid"},
)


def test_remote_stack_reports_the_server_it_uses(stack_server, milvus):
    """The stack runs remote::milvus against this server, with the token masked in /v1/providers."""
    response = httpx.get(f"{stack_server.base_url}/v1/providers/milvus", timeout=30)
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["provider_type"] == "remote::milvus"
    assert info["config"]["uri"] == milvus.uri
    if milvus.token:
        assert milvus.token not in response.text
    assert info["config"]["db_name"] is None  # ${env.MILVUS_DB_NAME:=} -> None -> the server's default database


def test_vector_search_right_after_attach_finds_the_file(client):
    """Strong consistency by default: Milvus 2.3.5 defaults to Bounded, where a search just after an insert misses."""
    doc = testdocs.BY_KEY["windows"]
    store_id = client.vector_stores.create(name="read-your-writes").id
    file_id = suite.upload(client, doc)
    started = time.monotonic()
    assert suite.attach(client, store_id, file_id, doc.attributes).status == "completed"
    hits = suite.search(client, store_id, doc.question, "vector", max_num_results=5)
    assert hits and hits[0].file_id == file_id, (time.monotonic() - started, hits)
