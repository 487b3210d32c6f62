"""One pymilvus client plus what its Milvus can do; every call runs off the event loop and fails loudly."""

import asyncio
import fcntl
import importlib.metadata
import os
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_stack.log import get_logger
from pymilvus import MilvusClient
from pymilvus.client.utils import SciPyHelper
from pymilvus.exceptions import MilvusException

from ..errors import MilvusBackendError, MilvusOpenError
from . import lite_bm25, lite_live_rows, lite_meta_filters
from .config import InlineMilvusConfig, RemoteMilvusConfig

logger = get_logger(name=__name__, category="vector_io::milvus")


@dataclass(frozen=True)
class Capabilities:
    version: str
    bm25: bool
    hnsw: bool
    # Milvus Lite scans unflushed rows row by row: flushing after each write keeps searches indexed.
    # Servers flush on their own, and a flush per write would seal tiny segments.
    flush_after_write: bool
    partition_key_filters: bool
    # Grouping search (one hit per value of a scalar field): Milvus 2.4 and Milvus Lite.
    grouping: bool
    # Milvus' built-in "english" analyser (standard tokenizer, lowercase, English stemmer, English stop words).
    # Milvus Lite 3.x has only `standard` and `jieba`: it rejects {"type": "english"} and silently ignores a
    # stemmer filter, so keyword_analyzer: english is refused there.
    english_analyzer: bool


class MilvusBackend:
    def __init__(
        self, client: MilvusClient, description: str, capabilities: Capabilities, timeout_s: float, owns_data: bool
    ):
        self.client = client
        # True for a Milvus Lite file, which one process at a time can open: nothing else writes to it.
        self.owns_data = owns_data
        self.description = description
        self.capabilities = capabilities
        self.timeout_s = timeout_s
        self._write_locks: dict[str, asyncio.Lock] = {}
        # pymilvus checks for scipy.sparse on the first request that could carry a sparse vector (every keyword
        # search) by executing scipy.sparse a second time; two request threads doing that at once, or one while
        # another thread imports scipy, fail with "partially initialized module 'scipy.sparse._bsr'" or a deadlock
        # error (a 503 under load in CI). Settling it here, before any request, leaves nothing to race.
        SciPyHelper.is_scipy_sparse(None)

    def write_lock(self, collection: str) -> AbstractAsyncContextManager:
        """Writes to one collection one at a time where we flush after writes (Milvus Lite): under 16 clients two
        concurrent flushes of one collection failed with "current_seq is monotonic; tried to set 197 < 201", and
        the attach with them. Servers take concurrent writes."""
        if not self.capabilities.flush_after_write:
            return nullcontext()
        return self._write_locks.setdefault(collection, asyncio.Lock())

    async def run(self, action: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(method, timeout=self.timeout_s, **kwargs)
        except MilvusException as e:
            reason = e.message or f"error code {e.code}"
            raise MilvusBackendError(f"Milvus ({self.description}) failed to {action}: {reason}") from e
        except Exception as e:
            # Anything else from inside pymilvus (a closed channel, a dropped connection) is still Milvus failing.
            raise MilvusBackendError(f"Milvus ({self.description}) failed to {action}: {e!r}") from e

    def close(self) -> None:
        self.client.close()


def open_lite_backend(config: InlineMilvusConfig) -> MilvusBackend:
    path = Path(os.path.expanduser(config.db_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    description = f"Milvus Lite file {path}"
    try:
        client = MilvusClient(uri=str(path))
    except Exception as e:
        # pymilvus only says "Open local milvus failed"; the real cause stays in Milvus Lite's log.
        reason = "another process holds it" if lite_file_locked(path) else str(e)
        raise MilvusOpenError(
            description,
            f"{reason} (a Lite file serves one process at a time)",
            "Stop the other server using it, or give this one another db_path (LLAMA_STACK_MILVUS_DIR).",
        ) from None
    version = importlib.metadata.version("milvus-lite")
    lite3 = int(version.split(".")[0]) >= 3
    if lite3:
        # Its keyword search scores in a Python loop, every search first walks every row in Python to find the live
        # ones, and every attribute filter parses every row's JSON: ours give the same results several times faster.
        lite_bm25.install()
        lite_live_rows.install()
        lite_meta_filters.install()
    capabilities = Capabilities(
        f"milvus-lite {version}",
        bm25=True,
        hnsw=lite3,
        flush_after_write=True,
        partition_key_filters=lite3,
        grouping=True,
        english_analyzer=not lite3,
    )
    return MilvusBackend(client, description, capabilities, config.request_timeout_s, owns_data=True)


def lite_file_locked(path: Path) -> bool:
    """Whether another process holds Milvus Lite 3.x's lock on the data directory (flock on <path>/LOCK)."""
    lock = path / "LOCK"
    if not lock.is_file():
        return False
    with lock.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def open_remote_backend(config: RemoteMilvusConfig) -> MilvusBackend:
    description = f"Milvus server {config.uri}"
    try:
        client = MilvusClient(**config.client_kwargs())
        version = client.get_server_version()
    except Exception as e:
        # pymilvus says "illegal connection params or server unavailable" for both a refused token and a server
        # that is down; the gRPC cause tells them apart. It may echo the token: never pass that on.
        reason = str(getattr(e, "message", None) or e)
        cause = getattr(e.__cause__, "details", None)
        if callable(cause) and cause():
            reason = f"{reason} ({cause()})"
        if config.token:
            reason = reason.replace(config.token.get_secret_value(), "***")
        raise MilvusOpenError(description, reason, "Check uri and token.") from None
    capabilities = capabilities_for_version(version)
    logger.info("Connected to Milvus", uri=config.uri, version=version, bm25=capabilities.bm25)
    return MilvusBackend(client, description, capabilities, config.request_timeout_s, owns_data=False)


def capabilities_for_version(version: str) -> Capabilities:
    """BM25 full-text search (and with it keyword and hybrid search, and the English analyser) arrived in Milvus 2.5
    (and Milvus Lite 2.5).

    Versions read like "v2.5.4", "v2.3.5-lite" (the PyPI `milvus` standalone) or "milvus_lite-3.2.2". A server
    without BM25 must be known before a collection is created: Milvus 2.3 accepts a BM25 schema, then crashes
    loading it.
    """
    numbers = re.search(r"(\d+)\.(\d+)", version)
    major_minor = (int(numbers[1]), int(numbers[2])) if numbers else (99, 0)
    # `milvus-lite server` is Milvus Lite behind gRPC: unflushed rows are scanned one by one there too.
    lite = version.startswith("milvus_lite")
    bm25 = major_minor >= (2, 5)
    return Capabilities(
        version,
        bm25=bm25,
        hnsw=True,
        flush_after_write=lite,
        partition_key_filters=True,
        grouping=major_minor >= (2, 4),
        # `milvus-lite server` serves Lite 3.x's analysers (no `english`): its version is milvus_lite-3.x.
        english_analyzer=bm25 and not (lite and major_minor >= (3, 0)),
    )
