"""The `milvus-cluster` distribution: one replica of a scale-out deployment (docs/scale-out.md).

Run N copies of it, each with the same environment, behind a load balancer (`scripts/cluster up` does that on one
machine with HAProxy). Nothing a replica keeps may live in the replica alone:

* every store (registry, vector-store metadata, files metadata, responses, inference, conversations) is on one
  PostgreSQL: POSTGRES_HOST (default localhost), POSTGRES_PORT (5432), POSTGRES_DB (llamastack), POSTGRES_USER
  (llamastack), POSTGRES_PASSWORD (no default: empty means none);
* vectors are in one Milvus server: MILVUS_URI, MILVUS_TOKEN as in milvus-remote;
* uploaded files are in LLAMA_STACK_FILES_DIR, a directory every replica mounts (a shared volume);
* the chat model is reached by URL, one server for all replicas: LLAMA_CPP_URL (a llama.cpp server's OpenAI
  base URL, e.g. `python -m llama_cpp.server` or `python -m llama_stack_milvus.inference.server`), or VLLM_URL,
  or TOGETHER_API_KEY. With none set the replica has embeddings and search but no chat model: a replica never
  starts a model server of its own.

Each replica listens on 127.0.0.1 (LLAMA_STACK_HOST to change it, e.g. 0.0.0.0 in a pod behind a Service).
`server.workers` is a plain integer: `llama stack list-deps` validates the config before it substitutes
${env...}, so an environment variable there breaks it (docs/scale-out.md shows how to set it).
"""

from typing import Any

from . import _common as common
from . import milvus_remote as remote

NAME = "milvus-cluster"
# Llama Stack's ${env...} does not nest, so the default cannot sit under LLAMA_STACK_MILVUS_DIR.
FILES_DIR = "${env.LLAMA_STACK_FILES_DIR:=~/.llama/distributions/" + NAME + "/files}"
LLAMA_CPP_PROVIDER_ID = "${env.LLAMA_CPP_URL:+" + common.LOCAL_LLM_PROVIDER_ID + "}"


def postgres(kind: str) -> dict[str, Any]:
    """A storage backend on the PostgreSQL that every replica shares (kind "kv" or "sql")."""
    backend: dict[str, Any] = {
        "type": f"{kind}_postgres",
        "host": "${env.POSTGRES_HOST:=localhost}",
        "port": "${env.POSTGRES_PORT:=5432}",
        "db": "${env.POSTGRES_DB:=llamastack}",
        "user": "${env.POSTGRES_USER:=llamastack}",
        "password": "${env.POSTGRES_PASSWORD:=}",
    }
    if kind == "sql":
        # Per process (each replica, each worker): SQLAlchemy's default 10 + 20 overflow would let four processes
        # take PostgreSQL's default max_connections (100). Integers, not ${env...}: see the module docstring.
        backend.update(pool_size=5, max_overflow=10)
    return backend


def chat_providers() -> list[dict[str, Any]]:
    """The chat model by URL only: the llama.cpp provider with base_url never starts a server of its own."""
    llama_cpp = common.local_llm_provider()
    llama_cpp["provider_id"] = LLAMA_CPP_PROVIDER_ID
    llama_cpp["config"] = {"model_alias": common.LOCAL_LLM_MODEL_ID, "base_url": "${env.LLAMA_CPP_URL:=}"}
    return [
        llama_cpp,
        common.together_provider(provider_id="${env.TOGETHER_API_KEY:+together}"),
        common.vllm_provider(provider_id="${env.VLLM_URL:+vllm}", base_url="${env.VLLM_URL:=}"),
    ]


def run_config() -> dict[str, Any]:
    config = common.run_config(
        NAME,
        common.state_dir(NAME),
        inference=chat_providers(),
        vector_io=remote.vector_io_providers(),
        llm_models=[common.llm_model(common.LOCAL_LLM_MODEL_ID, LLAMA_CPP_PROVIDER_ID)],
    )
    config["providers"]["files"][0]["config"]["storage_dir"] = FILES_DIR
    # Same backend names as every other distribution, so each store keeps its reference; only the engine changes.
    config["storage"]["backends"] = {"kv_default": postgres("kv"), "sql_default": postgres("sql")}
    config["server"]["workers"] = 1
    return config
