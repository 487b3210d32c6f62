"""One pymilvus client plus what its Milvus can do; every call runs off the event loop and fails loudly."""

import asyncio
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llama_stack.log import get_logger
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from .errors import MilvusBackendError

logger = get_logger(name=__name__, category="vector_io::milvus")


@dataclass(frozen=True)
class Capabilities:
    bm25: bool
    hnsw: bool
    # Milvus Lite scans unflushed rows row by row: flushing after each write keeps searches indexed.
    flush_after_write: bool
    # Lite 3.x leaves collections released after a reopen; servers keep them loaded.
    load_on_open: bool


def lite_capabilities() -> Capabilities:
    lite_major = int(importlib.metadata.version("milvus-lite").split(".")[0])
    return Capabilities(bm25=True, hnsw=lite_major >= 3, flush_after_write=True, load_on_open=True)


class MilvusBackend:
    def __init__(self, client: MilvusClient, description: str, capabilities: Capabilities):
        self.client = client
        self.description = description
        self.capabilities = capabilities

    async def run(self, action: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(method, **kwargs)
        except MilvusException as e:
            reason = e.message or f"error code {e.code}"
            raise MilvusBackendError(f"Milvus ({self.description}) failed to {action}: {reason}") from e
        except Exception as e:
            # Anything else from inside pymilvus (a closed channel, a dropped connection) is still Milvus failing.
            raise MilvusBackendError(f"Milvus ({self.description}) failed to {action}: {e!r}") from e

    def close(self) -> None:
        self.client.close()
