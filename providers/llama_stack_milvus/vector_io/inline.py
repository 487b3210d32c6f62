from typing import Any

from llama_stack_api import Api

from .config import InlineMilvusConfig


async def get_provider_impl(config: InlineMilvusConfig, deps: dict[Api, Any]):
    from .adapter import MilvusVectorIOAdapter

    impl = MilvusVectorIOAdapter(config, deps[Api.inference], deps.get(Api.files))
    await impl.initialize()
    return impl
