"""The `together` distribution (seed tutorial 1): Together AI's Llama 3.3 70B, Milvus, offline embeddings.

TOGETHER_API_KEY authenticates; TOGETHER_URL replaces the endpoint (the tests point it at a local llama.cpp
server). Milvus Lite by default; MILVUS_URI (and MILVUS_TOKEN) switch to a Milvus server or Zilliz Cloud.
"""

from typing import Any

from . import _common as common

NAME = "together"
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def run_config() -> dict[str, Any]:
    return common.hosted_model_run_config(NAME, common.together_provider(), MODEL)
