from typing import Any

from .config import OnnxEmbeddingsConfig


async def get_provider_impl(config: OnnxEmbeddingsConfig, _deps: dict[Any, Any]):
    """Entry point for inline::onnx-embeddings."""
    from .impl import OnnxEmbeddingsImpl

    impl = OnnxEmbeddingsImpl(config)
    await impl.initialize()
    return impl
