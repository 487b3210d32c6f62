"""The `deepseek` distribution (seed tutorial 3): DeepSeek's OpenAI-compatible API, Milvus, offline embeddings.

DEEPSEEK_API_KEY authenticates; DEEPSEEK_URL replaces https://api.deepseek.com (the tests point it at a local
llama.cpp server). Milvus Lite by default; MILVUS_URI (and MILVUS_TOKEN) switch to a Milvus server.
"""

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/gen_distributions.py loads templates by path

import _common as common  # noqa: E402

NAME = "deepseek"
MODEL = "deepseek-chat"


def run_config() -> dict[str, Any]:
    state = common.state_dir(NAME)
    deepseek = {
        "provider_id": "deepseek",
        # DeepSeek speaks the OpenAI API: Llama Stack's OpenAI provider with DeepSeek's base URL and key.
        "provider_type": "remote::openai",
        "config": {
            "base_url": "${env.DEEPSEEK_URL:=https://api.deepseek.com}",
            "api_key": "${env.DEEPSEEK_API_KEY:=}",
        },
    }
    return common.run_config(
        NAME,
        state,
        inference=[deepseek],
        vector_io=[common.milvus_lite_provider(state, server_from_env=True)],
        llm_models=[common.llm_model(MODEL, "deepseek")],
    )
