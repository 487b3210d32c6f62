"""distributions/milvus-cluster as Llama Stack 0.7.3 reads it: nothing a replica keeps lives in the replica alone."""

from pathlib import Path

import pytest
import yaml
from llama_stack.core.datatypes import StackConfig
from llama_stack.core.stack import replace_env_vars

RUN_YAML = Path(__file__).resolve().parents[2] / "distributions" / "milvus-cluster" / "run.yaml"
POSTGRES = {
    "POSTGRES_HOST": "db.internal",
    "POSTGRES_PORT": "6543",
    "POSTGRES_DB": "rag",
    "POSTGRES_USER": "stack",
    "POSTGRES_PASSWORD": "s3cret",
}


def load() -> StackConfig:
    return StackConfig(**replace_env_vars(yaml.safe_load(RUN_YAML.read_text())))


@pytest.fixture(autouse=True)
def cluster_env(monkeypatch):
    for name, value in POSTGRES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLAMA_STACK_FILES_DIR", "/shared/files")
    monkeypatch.setenv("MILVUS_URI", "http://milvus.internal:19530")
    for name in ("LLAMA_CPP_URL", "VLLM_URL", "TOGETHER_API_KEY", "LLAMA_STACK_HOST"):
        monkeypatch.delenv(name, raising=False)


def test_every_store_is_on_the_shared_postgres():
    config = load()
    backends = config.storage.backends
    assert {name: backend.type.value for name, backend in backends.items()} == {
        "kv_default": "kv_postgres",
        "sql_default": "sql_postgres",
    }
    for backend in backends.values():
        assert (backend.host, str(backend.port), backend.db, backend.user, backend.password) == (
            "db.internal",
            "6543",
            "rag",
            "stack",
            "s3cret",
        )
    stores = config.storage.stores
    references = [stores.metadata, stores.inference, stores.conversations, stores.prompts, stores.connectors]
    files = config.providers["files"][0].config
    responses = config.providers["responses"][0].config["persistence"]
    vector_io = config.providers["vector_io"][0].config
    used = [ref.backend for ref in references if ref is not None]
    used += [files["metadata_store"]["backend"], vector_io["persistence"]["backend"]]
    used += [responses["agent_state"]["backend"], responses["responses"]["backend"]]
    assert set(used) == {"kv_default", "sql_default"}


def test_files_shared_vectors_on_the_server_replica_on_loopback():
    config = load()
    assert config.providers["files"][0].config["storage_dir"] == "/shared/files"
    vector_io = config.providers["vector_io"][0]
    assert (vector_io.provider_type, vector_io.config["uri"]) == ("remote::milvus", "http://milvus.internal:19530")
    assert config.server.host == "127.0.0.1"
    assert config.server.workers == 1


def test_no_chat_model_unless_its_url_is_given(monkeypatch):
    """A replica never starts a llama.cpp server of its own: the chat model is one server for all, by URL."""
    chat = [p for p in load().providers["inference"] if p.provider_type == "inline::llama-cpp"]
    assert [p.provider_id for p in chat] == [None]
    monkeypatch.setenv("LLAMA_CPP_URL", "http://llm.internal:8080/v1")
    (provider,) = [p for p in load().providers["inference"] if p.provider_type == "inline::llama-cpp"]
    assert (provider.provider_id, provider.config["base_url"]) == ("llama-cpp", "http://llm.internal:8080/v1")
