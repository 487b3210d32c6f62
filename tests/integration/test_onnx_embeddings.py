"""inline::onnx-embeddings: the int8 exports of all-MiniLM-L6-v2 agree with sentence-transformers and serve the
distribution's stores (the smoothed export by default, the plain one for stores made with it) next to the torch
model."""

import base64
import os
import time

import httpx
import numpy as np
import pytest
import testdocs
from llama_stack_client import LlamaStackClient

from llama_stack_milvus.embeddings.encoder import OnnxEncoder
from llama_stack_milvus.embeddings.export import MODEL_FILE, ensure_onnx_model

ONNX_MODEL = "onnx/all-MiniLM-L6-v2-int8-smooth"
PLAIN_ONNX_MODEL = "onnx/all-MiniLM-L6-v2-int8"
TORCH_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def paragraphs_by_doc() -> list[tuple[str, str]]:
    """(document key, paragraph) for every paragraph of the test documents."""
    return [(doc.key, p.strip()) for doc in testdocs.ALL for p in doc.text().split("\n\n") if len(p.strip()) > 40]


def paragraphs() -> list[str]:
    return [paragraph for _, paragraph in paragraphs_by_doc()]


@pytest.fixture(scope="module")
def onnx_encoder() -> OnnxEncoder:
    return OnnxEncoder(ensure_onnx_model(), intra_op_threads=2)


def test_the_export_is_cached_and_reused(onnx_encoder):
    model_dir = ensure_onnx_model()
    written = (model_dir / MODEL_FILE).stat().st_mtime_ns
    started = time.perf_counter()
    assert ensure_onnx_model() == model_dir
    assert time.perf_counter() - started < 5
    assert (model_dir / MODEL_FILE).stat().st_mtime_ns == written
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".export-")]


def test_onnx_vectors_match_sentence_transformers(onnx_encoder):
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = paragraphs()
    assert len(texts) >= 20
    torch_model = SentenceTransformer(TORCH_MODEL, device="cpu")
    reference = torch_model.encode(texts, normalize_embeddings=True)
    vectors = onnx_encoder.encode(texts)
    assert vectors.shape == reference.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.min() > 0.97 and cosine.mean() > 0.99, (cosine.min(), cosine.mean())
    # What matters for retrieval: each FAQ question's best paragraph comes from its own document, as with torch.
    owners = np.array([key for key, _ in paragraphs_by_doc()])
    questions = [doc.question for doc in testdocs.ALL]
    expected = np.array([doc.key for doc in testdocs.ALL])
    torch_right = owners[(torch_model.encode(questions, normalize_embeddings=True) @ reference.T).argmax(axis=1)]
    onnx_right = owners[(onnx_encoder.encode(questions) @ vectors.T).argmax(axis=1)]
    assert (onnx_right == expected).sum() >= (torch_right == expected).sum() >= len(questions) - 1


def test_order_and_batching_do_not_change_a_vector(onnx_encoder):
    texts = paragraphs()[:40]
    together = onnx_encoder.encode(texts)
    alone = np.stack([onnx_encoder.encode([text])[0] for text in texts[:8]])
    assert np.array_equal(together[:8], alone)
    assert np.array_equal(onnx_encoder.encode(texts[::-1])[::-1], together)


@pytest.mark.server
def test_the_distribution_embeds_with_onnx_by_default_and_keeps_the_other_models(stack_server):
    """New stores get the smoothed export; a store made with the plain export (the default before) or torch keeps
    embedding with its own model."""
    client = LlamaStackClient(base_url=stack_server.base_url, timeout=120, max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert {ONNX_MODEL, PLAIN_ONNX_MODEL, TORCH_MODEL} <= set(models)
    doc = testdocs.SINGLE[0]
    file_id = client.files.create(file=(doc.filename, doc.data()), purpose="assistants").id
    found = {}
    for model in (None, PLAIN_ONNX_MODEL, TORCH_MODEL):
        extra = {} if model is None else {"embedding_model": model, "embedding_dimension": 384}
        store = client.vector_stores.create(name=f"onnx-{model}", extra_body=extra)
        assert store.metadata["embedding_model"] == (model or ONNX_MODEL)
        attached = client.vector_stores.files.create(store.id, file_id=file_id)
        while attached.status == "in_progress":
            time.sleep(0.5)
            attached = client.vector_stores.files.retrieve(file_id, vector_store_id=store.id)
        assert attached.status == "completed", attached.last_error
        hits = client.vector_stores.search(store.id, query=doc.question, max_num_results=3).data
        assert doc.phrase in testdocs.normalise(hits[0].content[0].text)
        found[model] = hits[0].score
    # Same chunk, near-identical cosine from every model.
    assert abs(found[None] - found[TORCH_MODEL]) < 0.05, found
    assert abs(found[PLAIN_ONNX_MODEL] - found[TORCH_MODEL]) < 0.05, found


@pytest.mark.server
def test_embeddings_endpoint_validates_its_input(stack_server):
    with httpx.Client(base_url=stack_server.base_url, timeout=60) as http:
        ok = http.post("/v1/embeddings", json={"model": ONNX_MODEL, "input": ["a", "b"], "encoding_format": "base64"})
        assert ok.status_code == 200, ok.text
        vector = np.frombuffer(base64.b64decode(ok.json()["data"][1]["embedding"]), dtype="<f4")
        assert vector.shape == (384,)
        # Both exports answer, each with its own vectors.
        text = "How do I copy a file in Python?"
        vectors = []
        for model in (ONNX_MODEL, PLAIN_ONNX_MODEL):
            response = http.post("/v1/embeddings", json={"model": model, "input": text})
            assert response.status_code == 200, response.text
            vectors.append(np.array(response.json()["data"][0]["embedding"]))
        assert 0.98 < float(vectors[0] @ vectors[1]) < 0.99999
        for body, expected in (
            ({"model": ONNX_MODEL, "input": []}, "at least 1"),
            ({"model": "onnx/all-MiniLM-L12-v2", "input": "a"}, "all-MiniLM-L12-v2"),
            ({"model": ONNX_MODEL, "input": "a", "dimensions": 768}, "384"),
        ):
            response = http.post("/v1/embeddings", json=body)
            assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
            assert expected in response.text
