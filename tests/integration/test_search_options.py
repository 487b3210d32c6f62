"""Search options through a real server (distributions/milvus-embedded): score thresholds of any sign, ranker
"neural", explained scores, one hit per file.

The rerank model is a stand-in speaking vLLM's (Jina's) /rerank protocol on a local port, reached through Llama
Stack's real remote::vllm provider: it scores a document by a fixed function of its text that is unrelated to the
retrieval scores, so a reranked order is visibly the model's. It also lists a model that always fails.
"""

import json
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest
import testdocs
from llama_stack_client import LlamaStackClient

from llama_stack_milvus_devtools.ports import free_port

pytestmark = pytest.mark.server

GOOD_RERANKER = "stand-in-reranker"
FAILING_RERANKER = "failing-reranker"
ATTACH_TIMEOUT_S = 120
MODES = ["vector", "keyword", "hybrid"]


def stand_in_relevance(query: str, document: str) -> float:
    """The stand-in model's score: deterministic, in 0..1, and unrelated to either retrieval leg."""
    return zlib.crc32(f"{query}\n{document}".encode()) / 2**32


class _RerankHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the vllm provider lists the server's models
        self._send(
            200, {"object": "list", "data": [{"id": m, "object": "model"} for m in (GOOD_RERANKER, FAILING_RERANKER)]}
        )

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append(body)  # type: ignore[attr-defined]
        if body["model"] == FAILING_RERANKER:
            self._send(500, {"error": "the stand-in reranker is out of order"})
            return
        results = [
            {"index": i, "relevance_score": stand_in_relevance(body["query"], doc)}
            for i, doc in enumerate(body["documents"])
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        self._send(200, {"results": results[: body.get("top_n") or len(results)]})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def reranker() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _RerankHandler)
    server.calls = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(make_server, reranker):
    stack = make_server("search-options", env={"VLLM_URL": f"http://127.0.0.1:{reranker.server_port}/v1"})
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def client(server) -> LlamaStackClient:
    return LlamaStackClient(base_url=server.base_url, timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http_client:
        yield http_client


@pytest.fixture(scope="module")
def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def wait_attached(client: LlamaStackClient, store_id: str, file_id: str) -> None:
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    status = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
    while status.status == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
    assert status.status == "completed", status.last_error


@pytest.fixture(scope="module")
def store(client) -> dict[str, Any]:
    """The test documents, each its own file, plus one long file of them all in small chunks: for most questions
    its chunks fill the top of an ungrouped search."""
    created = client.vector_stores.create(name="search-options")
    file_ids = {}
    for doc in testdocs.ALL:
        file_ids[doc.key] = client.files.create(file=(doc.filename, doc.data()), purpose="assistants").id
        client.vector_stores.files.create(created.id, file_id=file_ids[doc.key], attributes={"long": False})
    whole = "\n\n".join(doc.text() for doc in testdocs.ALL)
    file_ids["long"] = client.files.create(file=("all_docs.txt", whole.encode()), purpose="assistants").id
    client.vector_stores.files.create(
        created.id,
        file_id=file_ids["long"],
        attributes={"long": True},
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}},
    )
    for file_id in file_ids.values():
        wait_attached(client, created.id, file_id)
    return {"id": created.id, "files": file_ids}


def search(http: httpx.Client, store_id: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"/v1/vector_stores/{store_id}/search", json={"max_num_results": 50, **body})


def hits_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return response.json()["data"]


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    error = body.get("error") or body.get("detail") or body
    return error.get("message", str(error)) if isinstance(error, dict) else str(error)


def chunk_ids(hits: list) -> list[str]:
    return [h["attributes"]["chunk_id"] if isinstance(h, dict) else h.attributes["chunk_id"] for h in hits]


# ------------------------------------------------------------------------------------- 1. score thresholds

UNRELATED = "zebra stripes on the savanna at dusk"


@pytest.mark.parametrize(
    "mode,ranking",
    [("vector", {}), ("keyword", {}), ("hybrid", {"ranker": "rrf"}), ("hybrid", {"ranker": "weighted"})],
    ids=["vector", "keyword", "hybrid-rrf", "hybrid-weighted"],
)
def test_a_threshold_holds_for_every_value_negative_ones_included(http, store, mode, ranking):
    query = UNRELATED if mode == "vector" else testdocs.BY_KEY["memory"].question
    everything = hits_of(search(http, store["id"], {"query": query, "search_mode": mode, "ranking_options": ranking}))
    scores = [h["score"] for h in everything]
    assert len(scores) >= 3, scores
    if mode == "vector":  # an unrelated query: the tail has negative cosines (-1..1)
        negative = [s for s in scores if s < 0]
        assert len(negative) >= 2, scores
        thresholds = [(negative[0] + negative[-1]) / 2, 0.0]
    else:  # scores are >= 0 here: a negative threshold keeps everything, a positive one cuts
        thresholds = [-0.5, (scores[0] + scores[-1]) / 2]
    for threshold in thresholds:
        kept = hits_of(
            search(
                http,
                store["id"],
                {"query": query, "search_mode": mode, "ranking_options": {**ranking, "score_threshold": threshold}},
            )
        )
        assert all(h["score"] >= threshold for h in kept), (threshold, [h["score"] for h in kept])
        assert chunk_ids(kept) == chunk_ids([h for h in everything if h["score"] >= threshold])
    if mode == "vector":
        assert 0 < len(kept) < len(everything)  # 0.0 given explicitly drops the negative cosines


# ----------------------------------------------------------------------------------------- 2. ranker neural


def test_neural_without_a_model_or_default_is_a_400_saying_what_is_missing(http, store):
    response = search(http, store["id"], {"query": "memory", "ranking_options": {"ranker": "neural"}})
    message = error_of(response, 400)
    assert "ranking_options.model" in message and "default_reranker_model" in message


def test_neural_with_an_unknown_model_is_a_400_naming_it(http, store):
    response = search(
        http, store["id"], {"query": "memory", "ranking_options": {"ranker": "neural", "model": "nonexistent/model"}}
    )
    assert "nonexistent/model" in error_of(response, 400)


def test_neural_with_a_model_that_does_not_rerank_is_a_400_naming_it(http, store):
    model = "sentence-transformers/all-MiniLM-L6-v2"
    response = search(http, store["id"], {"query": "memory", "ranking_options": {"ranker": "neural", "model": model}})
    message = error_of(response, 400)
    assert model in message and "embedding" in message


def test_a_failing_reranker_is_a_503_naming_it(http, store):
    response = search(
        http,
        store["id"],
        {"query": "memory", "ranking_options": {"ranker": "neural", "model": f"vllm/{FAILING_RERANKER}"}},
    )
    message = error_of(response, 503)
    assert FAILING_RERANKER in message


@pytest.mark.parametrize("mode", MODES)
def test_neural_reorders_by_the_models_scores(http, store, reranker, mode):
    question = testdocs.BY_KEY["gil"].question
    body = {"query": question, "search_mode": mode, "max_num_results": 5}
    fused = hits_of(search(http, store["id"], body))
    calls_before = len(reranker.calls)
    neural = hits_of(
        search(http, store["id"], {**body, "ranking_options": {"ranker": "neural", "model": f"vllm/{GOOD_RERANKER}"}})
    )
    assert len(reranker.calls) == calls_before + 1
    candidates = reranker.calls[-1]["documents"]
    assert len(candidates) > 5  # the reranker sees a deeper list than it returns
    expected = sorted(candidates, key=lambda doc: -stand_in_relevance(question, doc))[:5]
    assert [h["content"][0]["text"] for h in neural] == expected
    assert [h["score"] for h in neural] == pytest.approx([stand_in_relevance(question, d) for d in expected])
    assert chunk_ids(neural) != chunk_ids(fused)


def test_neural_threshold_applies_to_the_rerankers_scores(http, store):
    question = testdocs.BY_KEY["gil"].question
    ranking = {"ranker": "neural", "model": f"vllm/{GOOD_RERANKER}"}
    everything = hits_of(
        search(http, store["id"], {"query": question, "max_num_results": 10, "ranking_options": ranking})
    )
    threshold = (everything[0]["score"] + everything[-1]["score"]) / 2
    kept = hits_of(
        search(
            http,
            store["id"],
            {"query": question, "max_num_results": 10, "ranking_options": {**ranking, "score_threshold": threshold}},
        )
    )
    assert chunk_ids(kept) == chunk_ids([h for h in everything if h["score"] >= threshold])
    assert 0 < len(kept) < len(everything)


# -------------------------------------------------------------------------------------- 3. explained scores


def recompute(explanation: dict[str, Any]) -> float:
    """The final score from the explanation's parts (the formulas of fusion.py)."""
    if "rerank" in explanation:
        return explanation["rerank"]["score"]
    vector, keyword, fusion = explanation["vector"], explanation["keyword"], explanation["fusion"]
    if explanation["mode"] == "vector":
        return vector["cosine"]
    if explanation["mode"] == "keyword":
        return keyword["bm25"]
    if fusion["ranker"] == "rrf":
        k = fusion["k"]
        parts = [1 / (k + leg["rank"]) for leg in (vector, keyword) if leg]
        return sum(parts) / (2 / (k + 1))
    alpha = fusion["alpha"]
    dense = alpha * min(max(vector["cosine"], 0.0), 1.0) if vector else 0.0
    sparse = (1 - alpha) * keyword["bm25"] / fusion["bm25_max"] if keyword else 0.0
    return dense + sparse


@pytest.mark.parametrize(
    "mode,ranking",
    [
        ("vector", {}),
        ("keyword", {}),
        ("hybrid", {"ranker": "rrf", "impact_factor": 10}),
        ("hybrid", {"ranker": "weighted", "alpha": 0.7}),
        ("hybrid", {}),
        ("hybrid", {"ranker": "neural", "model": f"vllm/{GOOD_RERANKER}"}),
    ],
    ids=["vector", "keyword", "rrf", "weighted", "default", "neural"],
)
def test_an_explanation_recomputes_the_score(http, store, mode, ranking):
    question = testdocs.BY_KEY["dictionaries"].question
    body = {"query": question, "search_mode": mode, "ranking_options": ranking, "max_num_results": 20}
    plain = hits_of(search(http, store["id"], body))
    explained = hits_of(search(http, store["id"], {**body, "explain": True}))
    assert [(h["attributes"]["chunk_id"], h["score"]) for h in explained] == [
        (h["attributes"]["chunk_id"], h["score"]) for h in plain
    ]
    assert all(h["content"][0].get("metadata") is None for h in plain)
    for hit in explained:
        explanation = hit["content"][0]["metadata"]["explanation"]
        assert explanation["mode"] == mode
        assert explanation["score"] == hit["score"]
        assert recompute(explanation) == pytest.approx(hit["score"], rel=1e-6, abs=1e-9)
        legs = [explanation["vector"], explanation["keyword"]]
        assert any(legs)
        for leg in filter(None, legs):
            assert 1 <= leg["rank"] <= explanation["depth"]
    if mode == "hybrid" and ranking.get("ranker") != "neural":
        both = [
            h
            for h in explained
            if all(h["content"][0]["metadata"]["explanation"][leg] for leg in ("vector", "keyword"))
        ]
        assert both, "no hit was found by both legs"


def test_explain_reaches_the_server_from_both_sdks(client, oai, store):
    question = testdocs.BY_KEY["mail"].question
    from_stack = client.vector_stores.search(
        store["id"], query=question, search_mode="hybrid", extra_body={"explain": True}
    )
    from_openai = oai.vector_stores.search(
        store["id"], query=question, extra_body={"explain": True, "search_mode": "hybrid"}
    )
    for page in (from_stack, from_openai):
        hit = page.data[0]
        explanation = hit.content[0].to_dict()["metadata"]["explanation"]
        assert recompute(explanation) == pytest.approx(hit.score)


@pytest.mark.parametrize(
    "body", [{"explain": "yes"}, {"group_by_file": 1}, {"explian": True}], ids=["str", "int", "typo"]
)
def test_a_bad_option_is_a_400_naming_it(http, store, body):
    message = error_of(search(http, store["id"], {"query": "memory", **body}), 400)
    assert next(iter(body)) in message


# ------------------------------------------------------------------------------------- 4. one hit per file


@pytest.mark.parametrize("mode", MODES)
def test_group_by_file_returns_k_distinct_files(http, store, mode):
    question = testdocs.BY_KEY["memory"].question
    k = 5
    ungrouped = hits_of(search(http, store["id"], {"query": question, "search_mode": mode, "max_num_results": k}))
    assert len({h["file_id"] for h in ungrouped}) < k, "the long file should fill the top of an ungrouped search"
    grouped = hits_of(
        search(http, store["id"], {"query": question, "search_mode": mode, "max_num_results": k, "group_by_file": True})
    )
    assert len(grouped) == k
    assert len({h["file_id"] for h in grouped}) == k
    assert [h["score"] for h in grouped] == sorted((h["score"] for h in grouped), reverse=True)
    if mode != "hybrid":  # one leg: each file's hit is its best chunk, the first hit of a search of that file alone
        for hit in grouped:
            alone = hits_of(
                search(
                    http,
                    store["id"],
                    {
                        "query": question,
                        "search_mode": mode,
                        "max_num_results": 1,
                        "filters": {"type": "eq", "key": "file_id", "value": hit["file_id"]},
                    },
                )
            )
            assert chunk_ids(alone) == chunk_ids([hit])


@pytest.mark.parametrize("mode", MODES)
def test_group_by_file_with_filters_and_exhaustion(http, store, mode):
    question = testdocs.BY_KEY["memory"].question
    only_short = {"type": "eq", "key": "long", "value": False}
    body = {"query": question, "search_mode": mode, "group_by_file": True, "filters": only_short}
    grouped = hits_of(search(http, store["id"], {**body, "max_num_results": 3}))
    assert len({h["file_id"] for h in grouped}) == len(grouped) == 3
    assert store["files"]["long"] not in {h["file_id"] for h in grouped}
    # More files asked for than the filter admits: every file the filter admits that matches, once each.
    every = hits_of(search(http, store["id"], {**body, "max_num_results": 50}))
    assert len({h["file_id"] for h in every}) == len(every) <= len(testdocs.ALL)
    if mode == "vector":
        assert len(every) == len(testdocs.ALL)


def test_group_by_file_with_neural_keeps_one_hit_per_file(http, store):
    body = {
        "query": testdocs.BY_KEY["memory"].question,
        "max_num_results": 5,
        "group_by_file": True,
        "ranking_options": {"ranker": "neural", "model": f"vllm/{GOOD_RERANKER}"},
    }
    hits = hits_of(search(http, store["id"], body))
    assert len({h["file_id"] for h in hits}) == len(hits) == 5


# ------------------------------------------------------------------------------------------ 5. quoted evidence


@pytest.mark.parametrize("mode", MODES)
def test_a_quote_is_the_chunk_text_at_its_offsets(http, store, mode):
    question = testdocs.BY_KEY["memory"].question
    body = {"query": question, "search_mode": mode, "max_num_results": 5, "quote": True, "explain": True}
    hits = hits_of(search(http, store["id"], body))
    assert hits
    for hit in hits:
        text, evidence = hit["content"][0]["text"], hit["content"][0]["metadata"]
        assert "explanation" in evidence
        quote = evidence["quote"]
        assert quote is not None, text
        assert quote["text"] == text[quote["start"] : quote["end"]]
        assert 0 < len(quote["text"]) < len(text) or text.strip() == quote["text"]
    top_quote = hits[0]["content"][0]["metadata"]["quote"]["text"].lower()
    assert {"reference", "counting", "garbage", "collector", "memory"} & set(top_quote.split()), top_quote
