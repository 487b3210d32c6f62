"""The `deepseek` distribution (seed tutorial 3): DeepSeek's OpenAI-compatible API, Milvus, offline embeddings.

DEEPSEEK_API_KEY authenticates; DEEPSEEK_URL replaces https://api.deepseek.com (the tests point it at a local
llama.cpp server). Milvus Lite by default; MILVUS_URI (and MILVUS_TOKEN) switch to a Milvus server.
"""

from typing import Any

from . import _common as common

NAME = "deepseek"
MODEL = "deepseek-chat"


def run_config() -> dict[str, Any]:
    deepseek = {
        "provider_id": "deepseek",
        # DeepSeek speaks the OpenAI API: Llama Stack's OpenAI provider with DeepSeek's base URL and key.
        "provider_type": "remote::openai",
        "config": {
            "base_url": "${env.DEEPSEEK_URL:=https://api.deepseek.com}",
            "api_key": "${env.DEEPSEEK_API_KEY:=}",
        },
    }
    return common.hosted_model_run_config(NAME, deepseek, MODEL)
