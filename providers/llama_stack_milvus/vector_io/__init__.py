from typing import Any

from llama_stack_api import Api

from .config import MilvusCommonConfig


async def get_provider_impl(config: MilvusCommonConfig, deps: dict[Api, Any]):
    """Entry point for both inline::milvus and remote::milvus; the config's type decides which Milvus."""
    from .. import file_search_quotes, postgres_kvstore
    from ..http_contract import install
    from .adapter import MilvusVectorIOAdapter

    install(max_upload_bytes=int(config.max_file_mib * 1024 * 1024))
    postgres_kvstore.install()
    file_search_quotes.install()

    impl = MilvusVectorIOAdapter(config, deps[Api.inference], deps.get(Api.files))
    await impl.initialize()
    return impl
