"""The `milvus-embedded` distribution: Milvus Lite in-process, offline embeddings and an offline chat model.

The chat model is SmolLM2-135M-Instruct on a llama.cpp server that the inline::llama-cpp provider starts, so
the distribution answers questions about ingested documents with no key and no network. Together and vLLM join
it when TOGETHER_API_KEY or VLLM_URL is set.
"""

from typing import Any

from . import _common as common

NAME = "milvus-embedded"


def chat_providers() -> list[dict[str, Any]]:
    """The local model, plus the hosted ones when their variables are set."""
    return [
        common.local_llm_provider(),
        common.together_provider(provider_id="${env.TOGETHER_API_KEY:+together}"),
        common.vllm_provider(provider_id="${env.VLLM_URL:+vllm}", base_url="${env.VLLM_URL:=}"),
    ]


def run_config(name: str = NAME, vector_io: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The run config; milvus_remote passes its own name and vector_io."""
    state = common.state_dir(name)
    return common.run_config(
        name,
        state,
        inference=chat_providers(),
        vector_io=vector_io if vector_io is not None else [common.milvus_lite_provider(state)],
        llm_models=[common.llm_model(common.LOCAL_LLM_MODEL_ID, common.LOCAL_LLM_PROVIDER_ID)],
    )
