from typing import Any

from .config import RerankConfig


async def get_provider_impl(config: RerankConfig, _deps: dict[Any, Any]):
    """Entry point for inline::rerank."""
    from .impl import RerankImpl

    impl = RerankImpl(config)
    await impl.initialize()
    return impl
