"""inline::rerank through a real server (distributions/milvus-embedded): ranker "neural" with the offline default
model in every search mode, a sentence-transformers CrossEncoder named by its local path, and the errors.

The CrossEncoder is built offline for the test from the packaged all-MiniLM-L6-v2 with a fresh one-label head: its
scores mean nothing, but it is a real CrossEncoder loaded from a folder, and the test recomputes them in-process.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import testdocs
import yaml
from llama_stack_client import LlamaStackClient
from test_search_options import chunk_ids, error_of, hits_of, search, wait_attached

from llama_stack_milvus_devtools.stack import EMBEDDED_RUN_YAML, StackServer

pytestmark = pytest.mark.server

DEFAULT_MODEL = "rerank/minilm-late-interaction"
MODES = ["vector", "keyword", "hybrid"]
# The FAQ questions and a few short queries (where word-level matching differs most from pooled cosine).
QUERIES = [doc.question for doc in testdocs.ALL] + ["memory", "threads and locks", "how fast is it"]
K = 5


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory) -> Path:
    import torch
    from sentence_transformers import CrossEncoder

    from llama_stack_milvus.embeddings.export import packaged_model_dir

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cross-encoder") / "tiny-cross-encoder"
    CrossEncoder(str(packaged_model_dir()), num_labels=1, device="cpu").save(str(path))
    return path


def run_yaml_with_rerank_model(target: Path, provider_model_id: str) -> Path:
    """The embedded distribution with one more rerank model registered on inline::rerank."""
    config = yaml.safe_load(EMBEDDED_RUN_YAML.read_text())
    config["registered_resources"]["models"].append(
        {
            "model_id": "user-reranker",
            "provider_id": "rerank",
            "provider_model_id": provider_model_id,
            "model_type": "rerank",
        }
    )
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


@pytest.fixture(scope="module")
def server(make_server, cross_encoder_dir, tmp_path_factory):
    run_yaml = run_yaml_with_rerank_model(tmp_path_factory.mktemp("yaml") / "run.yaml", str(cross_encoder_dir))
    stack = make_server("rerank", run_yaml=run_yaml)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=300) as http_client:
        yield http_client


@pytest.fixture(scope="module")
def store(server) -> dict[str, Any]:
    client = LlamaStackClient(base_url=server.base_url, timeout=120, max_retries=0)
    created = client.vector_stores.create(name="rerank")
    for doc in testdocs.ALL:
        file_id = client.files.create(file=(doc.filename, doc.data()), purpose="assistants").id
        client.vector_stores.files.create(
            created.id,
            file_id=file_id,
            chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}},
        )
        wait_attached(client, created.id, file_id)
    return {"id": created.id}


def stack_rerank(http: httpx.Client, model: str, query: str, items: list[Any], **extra: Any) -> httpx.Response:
    return http.post("/v1alpha/inference/rerank", json={"model": model, "query": query, "items": items, **extra})


def model_scores(http: httpx.Client, model: str, query: str, texts: list[str]) -> list[float]:
    """The model's score of each text, in the given order, from the stack's rerank API."""
    response = stack_rerank(http, model, query, texts)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert sorted(entry["index"] for entry in data) == list(range(len(texts)))
    scores = {entry["index"]: entry["relevance_score"] for entry in data}
    return [scores[i] for i in range(len(texts))]


def texts_of(hits: list[dict[str, Any]]) -> list[str]:
    return [hit["content"][0]["text"] for hit in hits]


@pytest.mark.parametrize("mode", MODES)
def test_the_default_model_orders_hits_by_its_scores(http, store, mode):
    reordered = 0
    for question in QUERIES:
        body = {"query": question, "search_mode": mode, "max_num_results": K}
        fused = hits_of(search(http, store["id"], body))
        neural = hits_of(
            search(http, store["id"], {**body, "ranking_options": {"ranker": "neural", "model": DEFAULT_MODEL}})
        )
        assert len(neural) == len(fused) > 0
        scores = [hit["score"] for hit in neural]
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx(model_scores(http, DEFAULT_MODEL, question, texts_of(neural)), abs=1e-6)
        if mode != "hybrid":
            # A vector or keyword search fetches max_num_results x chunk_multiplier (5) candidates for the
            # reranker: the same ones a plain search of that many returns. The model's top K of them are the hits.
            candidates = texts_of(hits_of(search(http, store["id"], {**body, "max_num_results": 5 * K})))
            candidate_scores = model_scores(http, DEFAULT_MODEL, question, candidates)
            best = sorted(zip(candidate_scores, candidates, strict=True), key=lambda pair: -pair[0])[:K]
            assert texts_of(neural) == [text for _, text in best]
        reordered += chunk_ids(neural) != chunk_ids(fused)
    assert reordered >= 1, "the model kept the fused order for every question"


def test_the_rerank_api_sorts_and_cuts_to_max_num_results(http):
    texts = [doc.text()[:400] for doc in testdocs.ALL[:5]]
    question = testdocs.ALL[2].question
    response = stack_rerank(http, DEFAULT_MODEL, question, texts, max_num_results=2)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    scores = model_scores(http, DEFAULT_MODEL, question, texts)
    assert [entry["index"] for entry in data] == sorted(range(5), key=lambda i: -scores[i])[:2]
    assert data[0]["index"] == 2  # the document that answers the question


def test_a_cross_encoder_named_by_its_path_orders_hits_by_its_scores(http, store, cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    model = f"rerank/{cross_encoder_dir}"
    local = CrossEncoder(str(cross_encoder_dir), device="cpu")
    question = testdocs.ALL[0].question
    body = {"query": question, "search_mode": "vector", "max_num_results": 3}
    neural = hits_of(search(http, store["id"], {**body, "ranking_options": {"ranker": "neural", "model": model}}))
    candidates = texts_of(hits_of(search(http, store["id"], {**body, "max_num_results": 15})))
    scores = local.predict([(question, text) for text in candidates]).tolist()
    expected = sorted(zip(scores, candidates, strict=True), reverse=True)
    assert texts_of(neural) == [text for _, text in expected[:3]]
    assert [hit["score"] for hit in neural] == pytest.approx([score for score, _ in expected[:3]], rel=1e-4)


def test_an_unknown_path_is_a_400_naming_it(http, store):
    model = "rerank//nonexistent/cross-encoder"
    response = search(http, store["id"], {"query": "memory", "ranking_options": {"ranker": "neural", "model": model}})
    assert model in error_of(response, 400)
    assert "/nonexistent/cross-encoder" in error_of(stack_rerank(http, model, "memory", ["a passage"]), 400)


def test_an_image_is_a_400_naming_the_item(http):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    message = error_of(stack_rerank(http, DEFAULT_MODEL, "memory", ["a passage", image]), 400)
    assert "items[1]" in message


def test_a_cross_encoder_that_cannot_load_stops_the_stack_naming_it(server_env, tmp_path):
    missing = tmp_path / "no-such-cross-encoder"
    run_yaml = run_yaml_with_rerank_model(tmp_path / "run.yaml", str(missing))
    stack = StackServer(run_yaml, tmp_path / "data", server_env)
    with pytest.raises(RuntimeError) as failed:
        stack.start()
    stack.stop()
    assert str(missing) in str(failed.value)
