"""The together, vllm and deepseek distributions, each pointed at a real local llama.cpp server standing in for
the hosted endpoint: they start, list their configured model, and generate through it; seeds 2 and 3 run on them.
"""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_milvus_devtools.milvus import connect, stop_server

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
PROMPT = [{"role": "user", "content": "Name the capital of France in one word."}]

# distribution -> (environment pointing it at the local server, the model id the stack lists)
DISTRIBUTIONS = {
    "together": (
        lambda url: {"TOGETHER_URL": url, "TOGETHER_API_KEY": "test-key"},
        "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    ),
    "vllm": (lambda url: {"VLLM_URL": url}, "vllm/meta-llama/Llama-3.1-8B-Instruct"),
    "deepseek": (lambda url: {"DEEPSEEK_URL": url, "DEEPSEEK_API_KEY": "test-key"}, "deepseek/deepseek-chat"),
}


@pytest.fixture(scope="module", params=sorted(DISTRIBUTIONS))
def hosted(request, make_server, llama_cpp):
    name = request.param
    env, model = DISTRIBUTIONS[name]
    server = make_server(name, run_yaml=ROOT / "distributions" / name / "run.yaml", env=env(llama_cpp.base_url))
    yield name, server, model
    server.stop()


def direct_answer(llama_cpp) -> str:
    response = httpx.post(
        f"{llama_cpp.base_url}/chat/completions",
        json={"model": "any", "messages": PROMPT, "temperature": 0, "max_tokens": 16},
        timeout=120,
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


def test_lists_its_model_and_generates_through_the_local_endpoint(hosted, llama_cpp):
    name, server, model = hosted
    client = LlamaStackClient(base_url=server.base_url, timeout=300)
    models = {m.id: m.model_type for m in client.models.list()}
    assert models.get(model) == "llm", models
    assert models.get("sentence-transformers/all-MiniLM-L6-v2") == "embedding", models
    completion = client.chat.completions.create(model=model, messages=PROMPT, temperature=0, max_tokens=16)
    # Temperature 0 is deterministic on llama.cpp: the same words as asking the local server directly show the
    # request went through the distribution's provider to that server.
    assert completion.choices[0].message.content == direct_answer(llama_cpp)
    store = client.vector_stores.create(name=f"{name}-check")
    assert store.id
    assert (server.data_dir / "milvus.db").exists()  # no MILVUS_URI: Milvus Lite in the state directory


def run_example(script: str, server, model: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--url", server.base_url, "--model", model],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("hosted", ["vllm"], indirect=True)
def test_seed2_runs_on_the_vllm_distribution(hosted):
    _name, server, model = hosted
    out = run_example("seed2_vllm_rag.py", server, model)
    assert "4 pages became" in out
    hits = [line for line in out.splitlines() if line.endswith(".html")]
    assert len(hits) == 2 and all(line.endswith("installed.html") for line in hits), out
    assert out.strip().splitlines()[-1].strip() not in hits[-1]  # an answer follows the sources


@pytest.mark.parametrize("hosted", ["deepseek"], indirect=True)
def test_seed3_runs_on_the_deepseek_distribution(hosted):
    _name, server, model = hosted
    out = run_example("seed3_deepseek_rag.py", server, model)
    hits = [line for line in out.splitlines() if line.endswith(".md")]
    assert len(hits) == 3 and hits[0].endswith("logs.md"), out
    assert out.strip().splitlines()[-1].strip() not in hits[-1]


def test_milvus_uri_switches_a_distribution_to_a_milvus_server(make_server, llama_cpp, milvus_factory):
    """MILVUS_URI (and MILVUS_TOKEN) move the together distribution's stores onto a real Milvus server."""
    milvus = milvus_factory("lite", fresh=True)  # its own: other tests' BM25 rankings on the shared one stay theirs
    env = DISTRIBUTIONS["together"][0](llama_cpp.base_url) | {"MILVUS_URI": milvus.uri, "MILVUS_TOKEN": "root:Milvus"}
    server = make_server("together-remote", run_yaml=ROOT / "distributions" / "together" / "run.yaml", env=env)
    try:
        client = LlamaStackClient(base_url=server.base_url, timeout=300)
        store = client.vector_stores.create(name="on-the-server")
        page = ROOT / "tests" / "data" / "corpus" / "docker-cli-md" / "logs.md"
        uploaded = client.files.create(file=(page.name, page.read_bytes()), purpose="assistants")
        client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id)
        hits = client.vector_stores.search(vector_store_id=store.id, query="follow the log output").data
        assert hits and hits[0].filename == "logs.md"
    finally:
        server.stop()
    milvus_client = connect(milvus.uri)
    try:
        collections = milvus_client.list_collections()
    finally:
        milvus_client.close()
    stop_server(milvus)
    assert collections, "no collection on the Milvus server: the store went elsewhere"
    assert not (server.data_dir / "milvus.db").exists()
