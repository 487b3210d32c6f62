from typing import Any

from llama_stack_api import Api

from .config import LlamaCppConfig


async def get_provider_impl(config: LlamaCppConfig, deps: dict[Api, Any]):
    """Entry point for inline::llama-cpp: a llama.cpp server of its own, reached through its OpenAI API."""
    from .adapter import LlamaCppInferenceAdapter

    impl = LlamaCppInferenceAdapter(config=config)
    await impl.initialize()
    return impl
