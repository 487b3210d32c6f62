"""The `milvus-remote` distribution: the embedded distribution with a Milvus server (or Zilliz Cloud) as vector_io.

Everything but vector_io comes from templates/milvus_embedded.py. The stack's own state (registry, files,
kvstore) lives in its own directory, so it never mixes with a milvus-embedded deployment on the same machine.

Environment: MILVUS_URI (default http://localhost:19530), MILVUS_TOKEN ("user:password" or a Zilliz Cloud API
key; empty for a server without authorization), MILVUS_DB_NAME (empty: the server's default database),
MILVUS_COLLECTION_MODE (per_store or shared), MILVUS_REQUEST_TIMEOUT_S (longest a Milvus call may take before the
request fails with a 503; default 30). The stack turns an empty `${env.X:=}` into None (null), which
the provider reads as "no token" and "default database".
"""

from typing import Any

from . import milvus_embedded as embedded

NAME = "milvus-remote"


def vector_io_providers() -> list[dict[str, Any]]:
    return [
        {
            "provider_id": "milvus",
            "provider_type": "remote::milvus",
            "module": "llama_stack_milvus",
            "config": {
                "uri": "${env.MILVUS_URI:=http://localhost:19530}",
                "token": "${env.MILVUS_TOKEN:=}",
                "db_name": "${env.MILVUS_DB_NAME:=}",
                "collection_mode": "${env.MILVUS_COLLECTION_MODE:=per_store}",
                "request_timeout_s": "${env.MILVUS_REQUEST_TIMEOUT_S:=30}",
                # With replicas: how soon a dead replica's unfinished batch is taken over by another.
                "lease_seconds": "${env.LLAMA_STACK_MILVUS_LEASE_SECONDS:=15}",
                "persistence": {"namespace": "vector_io::milvus_remote", "backend": "kv_default"},
            },
        }
    ]


def run_config() -> dict[str, Any]:
    return embedded.run_config(name=NAME, vector_io=vector_io_providers())
