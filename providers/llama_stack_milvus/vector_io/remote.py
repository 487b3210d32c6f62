from typing import Any

from llama_stack_api import Api

from .config import RemoteMilvusConfig


async def get_adapter_impl(config: RemoteMilvusConfig, deps: dict[Api, Any]):
    from .adapter import MilvusVectorIOAdapter

    impl = MilvusVectorIOAdapter(config, deps[Api.inference], deps.get(Api.files))
    await impl.initialize()
    return impl
