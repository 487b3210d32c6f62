"""Our layer over Llama Stack 0.7.3's OpenAIVectorStoreMixin (the OpenAI vector-store, file and batch bookkeeping).
Every departure from the mixin is here, so an upgrade of Llama Stack means reading this one module. Where and why:

Chunking
- 'auto' chunking uses the distribution's file_ingestion_params. The router rewrites 'auto' into a static
  800/400-token strategy before we see it, so that exact strategy is read as 'auto' too.
File contents
- a file's chunks are stored under one kvstore key (the mixin writes one key, a connection and a commit per chunk,
  and reads them back in key order 0, 1, 10, 100, ...); files stored the mixin's way still load.
Search
- input is validated first (every mistake a 400 naming the field; filters parsed once, see filters.py), and
  errors propagate (the mixin turns every exception into an empty 200);
- a score_threshold the request sets holds for every score, negative cosines included (the mixin passes the API's
  default 0.0 along as if sent, and our index used to read any threshold <= 0 as none);
- ranker "neural" is checked before the search (no model, an unknown one, one that is not a rerank model: a 400) and
  a failing reranker is a 503 (the mixin's path returns the unreranked list), see rerank.py; its candidates are
  over-fetched like hybrid's;
- extra body fields `explain` and `group_by_file` (search_options.py; the request model is made to keep extra
  fields, an unknown one is a 400); explanations go in each hit's content[0].metadata["explanation"] (explain.py);
- extra body field `quote`: the chunk's best supporting sentence with its offsets, in content[0].metadata["quote"]
  (quote.py).
Attach
- one attach of a file to a store at a time (concurrent attaches of one file each did the work and listed it twice);
- unknown and oversized files are refused before any work; a failed file keeps a last_error that says why;
- in a batch or a new store's file_ids, such files become failed files naming the reason (the mixin dropped them
  silently from a new store, and we used to refuse the whole batch).
Unknown ids
- a file or batch id the store does not hold is a 404 naming it (the mixin: a 400, or an empty 200 for contents).
Crashes and restarts
- in-progress batches, and attaches cut short by a crash or a shutdown, are resumed once the server serves (the
  mixin resumed batches in the start-up event loop, whose end cancelled them for good);
- batches and resumed attaches run as the request that started them (caller and provider data, see
  request_context.py), never as whichever request the server handled first.
Concurrency
- deleting a file cannot race a listing or a concurrent attach.
(Each was found by a test; tests/integration/test_reliability_*.py reproduce them.)
"""

import asyncio
import contextlib
import contextvars
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from llama_stack.log import get_logger
from llama_stack.providers.utils.memory.openai_vector_store_mixin import (
    OPENAI_VECTOR_STORES_FILES_CONTENTS_PREFIX,
    OPENAI_VECTOR_STORES_FILES_PREFIX,
    OpenAIVectorStoreMixin,
)
from llama_stack_api import (
    Chunk,
    ChunkForDeletion,
    DeleteChunksRequest,
    QueryChunksRequest,
    ResourceNotFoundError,
    RetrieveFileRequest,
    VectorStoreChunkingStrategy,
    VectorStoreChunkingStrategyAuto,
    VectorStoreChunkingStrategyStatic,
    VectorStoreChunkingStrategyStaticConfig,
    VectorStoreNotFoundError,
)
from llama_stack_api.vector_io.models import (
    DEFAULT_CHUNK_OVERLAP_TOKENS,
    DEFAULT_CHUNK_SIZE_TOKENS,
    OpenAIAttachFileRequest,
    OpenAICreateVectorStoreRequestWithExtraBody,
    OpenAISearchVectorStoreRequest,
    OpenAIUpdateVectorStoreFileRequest,
    VectorStoreFileBatchObject,
    VectorStoreFileContentResponse,
    VectorStoreFileDeleteResponse,
    VectorStoreFileLastError,
    VectorStoreFileObject,
    VectorStoreFileStatus,
    VectorStoreListFilesResponse,
    VectorStoreObject,
    VectorStoreSearchResponse,
    VectorStoreSearchResponsePage,
)

from ..errors import (
    FileTooLargeError,
    VectorStoreFileBatchNotFoundError,
    VectorStoreFileNotFoundError,
    invalid_request_on_value_error,
)
from . import request_context
from .filters import parse_filters
from .quote import best_quote
from .search_options import OPTION_NAMES, ExplainedChunks, accept_extra_search_fields, parse_search_options

# One key per attach in flight, holding its request: the mixin writes a file's record only once it is done.
ATTACHING_PREFIX = "llama_stack_milvus:attaching:v1::"
# Where a batch's record keeps the context (caller, provider data) of the request that created it.
REQUEST_CONTEXT_KEY = "request_context"
# Set while attaching the files of a batch or of a new store: a file that cannot be attached becomes a failed file.
RECORD_REFUSED_FILES: contextvars.ContextVar[bool] = contextvars.ContextVar("record_refused_files", default=False)
SEARCH_MODES = ("vector", "keyword", "hybrid")
RANKERS = ("rrf", "weighted", "neural")
MAX_NUM_RESULTS = 50

logger = get_logger(name=__name__, category="vector_io::milvus")


class MilvusOpenAIVectorStoreMixin(OpenAIVectorStoreMixin):
    """Needs `self.config.max_file_mib`, the mixin's `self.kvstore`, and query_chunks / delete_chunks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before the mixin's __init__, which assigns openai_vector_stores (a property here).
        self._ready = False
        self._serving = False
        self._shutting_down = False
        self._resume_tasks: set[asyncio.Task] = set()
        self._interrupted_attaches: list[str] = []  # kvstore keys of attaches a crash or shutdown cut short
        self._attach_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._attach_users: Counter[tuple[str, str]] = Counter()  # a lock goes when its last user leaves
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------------------------ resumes after restart

    # The mixin reads this dict first in nearly every vector-store call: the first one marks the server serving.
    @property
    def openai_vector_stores(self) -> dict[str, dict[str, Any]]:
        if self._ready and not self._serving:
            self._start_resumes()
        return self._openai_vector_stores

    @openai_vector_stores.setter
    def openai_vector_stores(self, value: dict[str, dict[str, Any]]) -> None:
        self._openai_vector_stores = value

    async def initialize_openai_vector_stores(self) -> None:
        self._interrupted_attaches = await self.kvstore.keys_in_range(ATTACHING_PREFIX, ATTACHING_PREFIX + "\xff")
        await super().initialize_openai_vector_stores()
        self._ready = True

    def _start_resumes(self) -> None:
        """Llama Stack 0.7.3 initializes providers in a temporary event loop (StackApp.__init__ runs
        asyncio.run(stack.initialize())) and serves requests in uvicorn's. The mixin resumes in-progress batches
        from initialize(), so that loop's end cancelled them and saved them as "cancelled" for good: after every
        restart their remaining files were never attached. Resumes start here instead, from the first call the
        server handles, in the loop that lives on."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._serving = True
        # An empty context: the request that happens to arrive first must not lend its identity to the resumes.
        self._track(loop.create_task(self._resume_after_restart(), context=contextvars.Context()))

    def _track(self, task: asyncio.Task) -> None:
        self._resume_tasks.add(task)
        task.add_done_callback(self._resume_tasks.discard)

    async def _resume_incomplete_batches(self) -> None:
        if self._serving:  # see _start_resumes; the mixin calls this from initialize() too
            await super()._resume_incomplete_batches()

    async def _save_openai_vector_store_file_batch(self, batch_id: str, batch_info: dict[str, Any]) -> None:
        # The first save happens in the request that creates the batch: its caller is who the batch runs as.
        batch_info.setdefault(REQUEST_CONTEXT_KEY, request_context.capture())
        if self._shutting_down and batch_info["status"] == "cancelled":
            # Cancelled by the shutdown, not by the user: stays in progress on disk, to resume at the next start.
            await super()._save_openai_vector_store_file_batch(batch_id, {**batch_info, "status": "in_progress"})
            self.openai_file_batches[batch_id] = batch_info
            return
        await super()._save_openai_vector_store_file_batch(batch_id, batch_info)

    async def _process_file_batch_async(
        self, batch_id: str, batch_info: dict[str, Any], file_ids_override: list[str] | None = None
    ) -> None:
        # Runs as the batch's creator (a resumed batch too), and records unknown or oversized files as failed files.
        with request_context.restore(batch_info.get(REQUEST_CONTEXT_KEY)):
            recording = RECORD_REFUSED_FILES.set(True)
            try:
                await super()._process_file_batch_async(batch_id, batch_info, file_ids_override)
            finally:
                RECORD_REFUSED_FILES.reset(recording)

    async def _resume_after_restart(self) -> None:
        await self._resume_incomplete_batches()
        await self._resume_interrupted_attaches(self._interrupted_attaches)

    async def _resume_interrupted_attaches(self, keys: list[str]) -> None:
        """Attaches that a crash (kill -9, power loss) cut short: nothing of them is recorded, yet some of
        their chunks may be in Milvus. Attaching again upserts the same chunk ids (they derive from the file
        and the text), so the file ends completed or failed with a reason and no chunk is stored twice.
        Files of an in-progress batch are left to the mixin, which resumes the batch itself."""
        batched = {
            (batch["vector_store_id"], file_id)
            for batch in self.openai_file_batches.values()
            if batch["status"] == "in_progress"
            for file_id in batch["file_ids"]
        }
        for key in keys:
            raw = await self.kvstore.get(key)
            await self.kvstore.delete(key)
            if raw is None:
                continue
            if not raw.startswith("{"):  # written by 0.2: "<store id>\n<request>"
                store_id, request_json = raw.split("\n", 1)
                raw = json.dumps({"vector_store_id": store_id, "request": json.loads(request_json)})
            record = json.loads(raw)
            vector_store_id = record["vector_store_id"]
            request = OpenAIAttachFileRequest.model_validate(record["request"])
            store = self.openai_vector_stores.get(vector_store_id)
            if store is None or request.file_id in store["file_ids"] or (vector_store_id, request.file_id) in batched:
                continue
            logger.info("Resuming an interrupted attach", vector_store_id=vector_store_id, file_id=request.file_id)
            with request_context.restore(record.get(REQUEST_CONTEXT_KEY)):  # the task starts in this context
                self._track(asyncio.create_task(self._resume_attach(vector_store_id, request)))

    async def _resume_attach(self, vector_store_id: str, request: OpenAIAttachFileRequest) -> None:
        try:
            result = await self.openai_attach_file_to_vector_store(vector_store_id, request)
        except Exception as e:  # e.g. the file was deleted from the Files API meanwhile
            logger.error("Could not resume an interrupted attach", file_id=request.file_id, error=str(e))
            return
        logger.info("Resumed an interrupted attach", file_id=request.file_id, status=result.status)

    async def shutdown(self) -> None:
        self._shutting_down = True
        for task in list(self._resume_tasks):
            task.cancel()
        await super().shutdown()

    # ---------------------------------------------------------------------------------------- chunking

    def _default_chunking(self) -> VectorStoreChunkingStrategyStatic:
        params = self.vector_stores_config.file_ingestion_params
        return VectorStoreChunkingStrategyStatic(
            static=VectorStoreChunkingStrategyStaticConfig(
                max_chunk_size_tokens=params.default_chunk_size_tokens,
                chunk_overlap_tokens=params.default_chunk_overlap_tokens,
            )
        )

    def _is_auto(self, strategy: VectorStoreChunkingStrategy | None) -> bool:
        if strategy is None or strategy.type == "auto":
            return True
        return isinstance(strategy, VectorStoreChunkingStrategyStatic) and (
            strategy.static.max_chunk_size_tokens,
            strategy.static.chunk_overlap_tokens,
        ) == (DEFAULT_CHUNK_SIZE_TOKENS, DEFAULT_CHUNK_OVERLAP_TOKENS)

    async def openai_create_vector_store(
        self, params: OpenAICreateVectorStoreRequestWithExtraBody
    ) -> VectorStoreObject:
        if self._is_auto(params.chunking_strategy):
            params = params.model_copy(update={"chunking_strategy": self._default_chunking()})
        recording = RECORD_REFUSED_FILES.set(True)  # the store is made even if some of its file_ids are bad
        try:
            return await super().openai_create_vector_store(params)
        finally:
            RECORD_REFUSED_FILES.reset(recording)

    # ----------------------------------------------------------------------------------- file contents

    # The mixin stores a file's chunks one kvstore key each: with the sqlite kvstore that is a connection and a
    # commit per chunk, and its range read returns them in key order (0, 1, 10, 100, 11, ...). We store the list
    # under one key: one commit, chunks in file order. Files stored the mixin's way still load, and the mixin's
    # delete removes both shapes (it deletes keys 0..n-1).
    async def _save_openai_vector_store_file(
        self, store_id: str, file_id: str, file_info: dict[str, Any], file_contents: list[dict[str, Any]]
    ) -> None:
        prefix = self._contents_prefix(store_id, file_id)
        # Keys only: reading the values back would load the previous contents (embeddings included) on every attach.
        stale = [key for key in await self.kvstore.keys_in_range(prefix, prefix + "\xff") if key != f"{prefix}0"]
        await self.kvstore.set(
            key=f"{OPENAI_VECTOR_STORES_FILES_PREFIX}{store_id}:{file_id}", value=json.dumps(file_info)
        )
        await self.kvstore.set(key=f"{prefix}0", value=json.dumps(file_contents))
        for key in stale:
            await self.kvstore.delete(key)

    async def _load_openai_vector_store_file_contents(self, store_id: str, file_id: str) -> list[dict[str, Any]]:
        prefix = self._contents_prefix(store_id, file_id)
        chunks: list[dict[str, Any]] = []
        for raw in await self.kvstore.values_in_range(prefix, prefix + "\xff"):
            stored = json.loads(raw)
            chunks.extend(stored if isinstance(stored, list) else [stored])
        return chunks

    @staticmethod
    def _contents_prefix(store_id: str, file_id: str) -> str:
        return f"{OPENAI_VECTOR_STORES_FILES_CONTENTS_PREFIX}{store_id}:{file_id}:"

    # -------------------------------------------------------------------------------------------- attaching

    async def openai_attach_file_to_vector_store(
        self, vector_store_id: str, request: OpenAIAttachFileRequest
    ) -> VectorStoreFileObject:
        if vector_store_id not in self.openai_vector_stores:
            raise VectorStoreNotFoundError(vector_store_id)
        if self._is_auto(request.chunking_strategy):
            stored = self.openai_vector_stores[vector_store_id].get("chunking_strategy") or {}
            strategy = (
                VectorStoreChunkingStrategyStatic.model_validate(stored)
                if stored.get("type") == "static"
                else self._default_chunking()
            )
            request = request.model_copy(update={"chunking_strategy": strategy})
        async with self._attaching(vector_store_id, request.file_id):
            try:
                await self._check_attachable(request.file_id)
            except (ResourceNotFoundError, FileTooLargeError, ValueError) as e:
                if not RECORD_REFUSED_FILES.get():
                    raise
                return await self._record_refused_file(vector_store_id, request, str(e))
            key = f"{ATTACHING_PREFIX}{vector_store_id}:{request.file_id}"
            record = {
                "vector_store_id": vector_store_id,
                "request": request.model_dump(mode="json"),
                REQUEST_CONTEXT_KEY: request_context.capture(),
            }
            await self.kvstore.set(key, json.dumps(record))
            try:
                result = await super().openai_attach_file_to_vector_store(vector_store_id, request)
            except asyncio.CancelledError:
                raise  # a shutdown: the key stays, so the next start resumes this attach
            except BaseException:
                await self.kvstore.delete(key)
                raise
            await self.kvstore.delete(key)
        if result.status == "failed" and result.last_error:
            # The mixin saves the record without last_error: a later retrieve would not say why it failed.
            result.last_error = await self._explain_failure(request.file_id, result.last_error)
            info = await self._load_openai_vector_store_file(vector_store_id, request.file_id)
            if info.get("status") == "failed" and not info.get("last_error"):
                info["last_error"] = result.last_error.model_dump()
                await self._update_openai_vector_store_file(vector_store_id, request.file_id, info)
        return result

    @contextlib.asynccontextmanager
    async def _attaching(self, vector_store_id: str, file_id: str) -> AsyncIterator[None]:
        """One attach of a file to a store at a time. The mixin checks "already attached" before its awaits and
        appends the file to the store when done: two concurrent attaches of one file (a client retrying after a
        timeout) both did the work and listed the file twice, with file_counts.total 2. The second now waits, then
        finds the file attached and returns its record."""
        key = (vector_store_id, file_id)
        lock = self._attach_locks.setdefault(key, asyncio.Lock())
        self._attach_users[key] += 1
        try:
            async with lock:
                yield
        finally:
            self._attach_users[key] -= 1
            if not self._attach_users[key]:
                del self._attach_users[key], self._attach_locks[key]

    # ------------------------------------------------------------------------- deleting, listing, batches

    async def openai_delete_vector_store_file(
        self, vector_store_id: str, file_id: str
    ) -> VectorStoreFileDeleteResponse:
        """The mixin's delete removes the file's record before taking it out of the store's file list, and writes
        back a copy of the store taken before its awaits, without the store lock. Under 16 concurrent clients a
        listing then met a file id with no record (a 400 naming missing fields), and an attach that finished
        meanwhile could vanish from the list. Here: chunks first, then list and records together under the lock."""
        file = await self.openai_retrieve_vector_store_file(vector_store_id, file_id)  # 400 for an unknown file
        contents = await self._load_openai_vector_store_file_contents(vector_store_id, file_id)
        chunks = [Chunk.model_validate(c) for c in contents]
        await self.delete_chunks(
            DeleteChunksRequest(
                vector_store_id=vector_store_id,
                chunks=[ChunkForDeletion(chunk_id=c.chunk_id, document_id=c.document_id or file_id) for c in chunks],
            )
        )
        async with self._get_vector_store_lock(vector_store_id):
            store_info = dict(self.openai_vector_stores[vector_store_id])
            if file_id in store_info["file_ids"]:  # a concurrent delete of the same file may have won
                store_info["file_ids"] = [fid for fid in store_info["file_ids"] if fid != file_id]
                counts = dict(store_info["file_counts"])
                counts[file.status] -= 1
                counts["total"] -= 1
                store_info["file_counts"] = counts
                await self._save_openai_vector_store(vector_store_id, store_info)
            await self._delete_openai_vector_store_file_from_storage(vector_store_id, file_id)
        return VectorStoreFileDeleteResponse(id=file_id, deleted=True)

    async def openai_list_files_in_vector_store(
        self,
        vector_store_id: str,
        limit: int | None = 20,
        order: str | None = "desc",
        after: str | None = None,
        before: str | None = None,
        filter: VectorStoreFileStatus | None = None,
    ) -> VectorStoreListFilesResponse:
        # The mixin reads one record per file across awaits: under the lock no delete can remove one meanwhile.
        async with self._get_vector_store_lock(vector_store_id):
            return await super().openai_list_files_in_vector_store(vector_store_id, limit, order, after, before, filter)

    async def openai_retrieve_vector_store_file_contents(
        self,
        vector_store_id: str,
        file_id: str,
        include_embeddings: bool | None = False,
        include_metadata: bool | None = False,
    ) -> VectorStoreFileContentResponse:
        # The mixin answers an unknown file id with an empty 200, as if the file had no text.
        self._require_file(vector_store_id, file_id)
        return await super().openai_retrieve_vector_store_file_contents(
            vector_store_id, file_id, include_embeddings, include_metadata
        )

    async def _record_refused_file(
        self, vector_store_id: str, request: OpenAIAttachFileRequest, reason: str
    ) -> VectorStoreFileObject:
        """A file of a batch or of a new store that cannot be attached (unknown id, too large): listed in the store
        as failed, with the reason, and counted, as OpenAI does; the mixin let such files vanish without a trace."""
        file = VectorStoreFileObject(
            id=request.file_id,
            attributes=request.attributes or {},
            chunking_strategy=request.chunking_strategy or VectorStoreChunkingStrategyAuto(),
            created_at=int(time.time()),
            status="failed",
            vector_store_id=vector_store_id,
            last_error=VectorStoreFileLastError(code="server_error", message=reason),
        )
        async with self._get_vector_store_lock(vector_store_id):
            store_info = self.openai_vector_stores[vector_store_id]
            if request.file_id in store_info["file_ids"]:
                return VectorStoreFileObject(**await self._load_openai_vector_store_file(vector_store_id, file.id))
            await self._save_openai_vector_store_file(
                vector_store_id, file.id, {**file.model_dump(), "filename": ""}, []
            )
            counts = dict(store_info["file_counts"])
            counts["total"] += 1
            counts["failed"] += 1
            await self._save_openai_vector_store(
                vector_store_id,
                {**store_info, "file_ids": [*store_info["file_ids"], file.id], "file_counts": counts},
            )
        return file

    # ------------------------------------------------------------------- unknown ids: a 404 naming them

    def _require_file(self, vector_store_id: str, file_id: str) -> None:
        """The mixin raises a bare ValueError (a 400) for a file id the store does not hold; OpenAI answers 404."""
        store = self.openai_vector_stores.get(vector_store_id)
        if store is None:
            raise VectorStoreNotFoundError(vector_store_id)
        if file_id not in store["file_ids"]:
            raise VectorStoreFileNotFoundError(file_id, vector_store_id)

    def _require_batch(self, vector_store_id: str, batch_id: str) -> None:
        """As _require_file; a batch of another store is not found either (its existence does not leak)."""
        if vector_store_id not in self.openai_vector_stores:
            raise VectorStoreNotFoundError(vector_store_id)
        batch = self.openai_file_batches.get(batch_id)
        if batch is None or batch["vector_store_id"] != vector_store_id:
            raise VectorStoreFileBatchNotFoundError(batch_id, vector_store_id)

    async def openai_retrieve_vector_store_file(self, vector_store_id: str, file_id: str) -> VectorStoreFileObject:
        self._require_file(vector_store_id, file_id)
        return await super().openai_retrieve_vector_store_file(vector_store_id, file_id)

    async def openai_update_vector_store_file(
        self, vector_store_id: str, file_id: str, request: OpenAIUpdateVectorStoreFileRequest
    ) -> VectorStoreFileObject:
        self._require_file(vector_store_id, file_id)
        return await super().openai_update_vector_store_file(vector_store_id, file_id, request)

    async def openai_retrieve_vector_store_file_batch(
        self, batch_id: str, vector_store_id: str
    ) -> VectorStoreFileBatchObject:
        self._require_batch(vector_store_id, batch_id)
        return await super().openai_retrieve_vector_store_file_batch(batch_id, vector_store_id)

    async def openai_list_files_in_vector_store_file_batch(self, batch_id: str, vector_store_id: str, *args, **kwargs):
        self._require_batch(vector_store_id, batch_id)
        return await super().openai_list_files_in_vector_store_file_batch(batch_id, vector_store_id, *args, **kwargs)

    async def openai_cancel_vector_store_file_batch(
        self, batch_id: str, vector_store_id: str
    ) -> VectorStoreFileBatchObject:
        self._require_batch(vector_store_id, batch_id)
        return await super().openai_cancel_vector_store_file_batch(batch_id, vector_store_id)

    async def _check_attachable(self, file_id: str) -> None:
        """A 404 for an unknown file id; a 413 for a file above max_file_mib, which would hold the server for
        minutes of embedding. Both before any work is done."""
        if not self.files_api:
            return
        size = (await self.files_api.openai_retrieve_file(RetrieveFileRequest(file_id=file_id))).bytes
        limit = self.config.max_file_mib
        if size > limit * 1024 * 1024:
            raise FileTooLargeError(
                f"File {file_id} is {size / 1024 / 1024:.1f} MiB; this server ingests files of at most {limit:g} "
                "MiB (max_file_mib in the vector_io provider config): split it into smaller files"
            )

    async def _explain_failure(self, file_id: str, error: VectorStoreFileLastError) -> VectorStoreFileLastError:
        """The mixin's "No chunks were generated from the file" does not say why: an empty file, or one whose
        type yields no text (binary, unknown extension)."""
        if not error.message.startswith("No chunks were generated") or not self.files_api:
            return error
        file = await self.files_api.openai_retrieve_file(RetrieveFileRequest(file_id=file_id))
        if file.bytes == 0:
            reason = f"File {file_id} ({file.filename}) is empty: it has no text to index"
        else:
            reason = (
                f"No text could be extracted from file {file_id} ({file.filename}, {file.bytes} bytes): it is binary "
                "or of a type with no text extractor; upload text, Markdown, HTML or PDF"
            )
        return VectorStoreFileLastError(code="server_error", message=reason)

    # ---------------------------------------------------------------------------------------------- search

    async def openai_search_vector_store(
        self, vector_store_id: str, request: OpenAISearchVectorStoreRequest
    ) -> VectorStoreSearchResponsePage:
        query = " ".join(request.query) if isinstance(request.query, list) else request.query
        with invalid_request_on_value_error():
            params = self._search_params(request, query)
        if vector_store_id not in self.openai_vector_stores:
            raise VectorStoreNotFoundError(vector_store_id)
        response = await self.query_chunks(
            QueryChunksRequest(vector_store_id=vector_store_id, query=query, params=params)
        )
        explanations = response.explanations if isinstance(response, ExplainedChunks) else None
        data = []
        for position, (chunk, score) in enumerate(zip(response.chunks, response.scores, strict=True)):
            content = self._chunk_to_vector_store_content(chunk)
            if content and (explanations is not None or params.get("quote")):
                explained = explanations[position] if explanations is not None else None
                content[0].metadata = self._hit_evidence(content[0].text, query, explained, bool(params.get("quote")))
            data.append(
                VectorStoreSearchResponse(
                    file_id=chunk.metadata.get("document_id", ""),
                    filename=chunk.metadata.get("filename", ""),
                    score=score,
                    attributes=chunk.metadata,
                    content=content,
                )
            )
        search_query = request.query if isinstance(request.query, list) else [request.query]
        return VectorStoreSearchResponsePage(
            search_query=search_query, data=data[: params["max_num_results"]], has_more=False, next_page=None
        )

    def _search_params(self, request: OpenAISearchVectorStoreRequest, query: str) -> dict[str, Any]:
        """Validates a search request up front so that every mistake is a 400 naming the field."""
        mode = request.search_mode or "vector"
        if mode not in SEARCH_MODES:
            raise ValueError(f"search_mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}")
        if not query.strip():
            raise ValueError("query must contain some text")
        max_num_results = 10 if request.max_num_results is None else request.max_num_results
        if not 1 <= max_num_results <= MAX_NUM_RESULTS:
            raise ValueError(f"max_num_results must be between 1 and {MAX_NUM_RESULTS}; got {max_num_results}")
        ranking = request.ranking_options
        if ranking and ranking.ranker is not None and ranking.ranker not in RANKERS:
            raise ValueError(f"ranking_options.ranker must be one of {', '.join(RANKERS)}; got {ranking.ranker!r}")
        # Over-fetch for hybrid, where the fusion profits from deeper lists, and for a reranker, which can only
        # promote what it is given. A vector or keyword search ranks the same candidates whatever its limit (HNSW's
        # ef is fixed at >= 256), so a deeper fetch only costs.
        deeper = mode == "hybrid" or (ranking is not None and ranking.ranker == "neural")
        multiplier = self.vector_stores_config.chunk_retrieval_params.chunk_multiplier if deeper else 1
        params: dict[str, Any] = {
            "mode": mode,
            "max_num_results": max_num_results,
            "max_chunks": max_num_results * multiplier,
        }
        # A threshold the request sets holds for every score, negative cosines included. The API's default of 0.0
        # (one that was not sent) is no threshold: unrelated chunks can have a negative cosine.
        if ranking and "score_threshold" in ranking.model_fields_set and ranking.score_threshold is not None:
            if not math.isfinite(ranking.score_threshold):
                raise ValueError("ranking_options.score_threshold must be a finite number")
            params["score_threshold"] = ranking.score_threshold
        filters = parse_filters(request.filters)
        if filters is not None:
            params["filters"] = filters
        options = parse_search_options(request.model_extra)
        params.update({name: True for name in OPTION_NAMES if getattr(options, name)})
        params.update(self._build_reranker_params(ranking, self.vector_stores_config))
        return params

    @staticmethod
    def _hit_evidence(text: str, query: str, explained: dict[str, Any] | None, quote: bool) -> dict[str, Any]:
        """A hit's content[0].metadata: its explanation (explain: true) and its quote (quote: true; null when no
        sentence of the chunk shares a word with the query)."""
        evidence: dict[str, Any] = {}
        if explained is not None:
            evidence["explanation"] = explained
        if quote:
            span = best_quote(text, query)
            evidence["quote"] = {"text": text[span[0] : span[1]], "start": span[0], "end": span[1]} if span else None
        return evidence


# Before the server builds its routes from the request models (see search_options.py).
accept_extra_search_fields()
