"""The `vllm` distribution (seed tutorial 2): a vLLM server's OpenAI API, Milvus, offline embeddings.

VLLM_URL is the server's OpenAI base URL (default http://localhost:8000/v1), VLLM_MODEL the model it serves
(default meta-llama/Llama-3.1-8B-Instruct, as in the tutorial). Milvus Lite by default; MILVUS_URI (and
MILVUS_TOKEN) switch to a Milvus server or Zilliz Cloud.
"""

from typing import Any

from . import _common as common

NAME = "vllm"
MODEL = "${env.VLLM_MODEL:=meta-llama/Llama-3.1-8B-Instruct}"


def run_config() -> dict[str, Any]:
    return common.hosted_model_run_config(NAME, common.vllm_provider(), MODEL)
