"""What the OpenAI vector-store mixin of Llama Stack 0.7.3 gets wrong under crashes, restarts, concurrent clients
and bad files, fixed in one layer between it and the adapter (each found by tests/integration/test_reliability_*):

- in-progress batches, and attaches cut short by a crash or a shutdown, are resumed once the server serves;
- a failed file keeps a last_error that says why; unknown and oversized files are refused before any work;
- deleting a file cannot race a listing or a concurrent attach;
- attaching a file that is being attached waits for that attach instead of doing it twice.
"""

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from llama_stack.log import get_logger
from llama_stack.providers.utils.memory.openai_vector_store_mixin import OpenAIVectorStoreMixin
from llama_stack_api import Chunk, ChunkForDeletion, DeleteChunksRequest, RetrieveFileRequest, VectorStoreNotFoundError
from llama_stack_api.vector_io.models import (
    OpenAIAttachFileRequest,
    OpenAICreateVectorStoreFileBatchRequestWithExtraBody,
    VectorStoreFileBatchObject,
    VectorStoreFileContentResponse,
    VectorStoreFileDeleteResponse,
    VectorStoreFileLastError,
    VectorStoreFileObject,
    VectorStoreFileStatus,
    VectorStoreListFilesResponse,
)

from .errors import FileTooLargeError, InvalidRequestError

# One key per attach in flight, holding its request: the mixin writes a file's record only once it is done.
ATTACHING_PREFIX = "llama_stack_milvus:attaching:v1::"

logger = get_logger(name=__name__, category="vector_io::milvus")


class ResilientFilesMixin(OpenAIVectorStoreMixin):
    """Needs `self.config.max_file_mib`; the kvstore is the mixin's `self.kvstore`."""

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
        self._track(loop.create_task(self._resume_after_restart()))

    def _track(self, task: asyncio.Task) -> None:
        self._resume_tasks.add(task)
        task.add_done_callback(self._resume_tasks.discard)

    async def _resume_incomplete_batches(self) -> None:
        if self._serving:  # see _start_resumes; the mixin calls this from initialize() too
            await super()._resume_incomplete_batches()

    async def _save_openai_vector_store_file_batch(self, batch_id: str, batch_info: dict[str, Any]) -> None:
        if self._shutting_down and batch_info["status"] == "cancelled":
            # Cancelled by the shutdown, not by the user: stays in progress on disk, to resume at the next start.
            await super()._save_openai_vector_store_file_batch(batch_id, {**batch_info, "status": "in_progress"})
            self.openai_file_batches[batch_id] = batch_info
            return
        await super()._save_openai_vector_store_file_batch(batch_id, batch_info)

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
            vector_store_id, request_json = raw.split("\n", 1)
            request = OpenAIAttachFileRequest.model_validate_json(request_json)
            store = self.openai_vector_stores.get(vector_store_id)
            if store is None or request.file_id in store["file_ids"] or (vector_store_id, request.file_id) in batched:
                continue
            logger.info("Resuming an interrupted attach", vector_store_id=vector_store_id, file_id=request.file_id)
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

    # -------------------------------------------------------------------------------------------- attaching

    async def openai_attach_file_to_vector_store(
        self, vector_store_id: str, request: OpenAIAttachFileRequest
    ) -> VectorStoreFileObject:
        await self._check_attachable(request.file_id)
        async with self._attaching(vector_store_id, request.file_id):
            key = f"{ATTACHING_PREFIX}{vector_store_id}:{request.file_id}"
            await self.kvstore.set(key, f"{vector_store_id}\n{request.model_dump_json()}")
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
        store = self.openai_vector_stores.get(vector_store_id)
        if store is not None and file_id not in store["file_ids"]:
            raise InvalidRequestError(f"File {file_id} not found in vector store {vector_store_id}")
        return await super().openai_retrieve_vector_store_file_contents(
            vector_store_id, file_id, include_embeddings, include_metadata
        )

    async def openai_create_vector_store_file_batch(
        self, vector_store_id: str, params: OpenAICreateVectorStoreFileBatchRequestWithExtraBody
    ) -> VectorStoreFileBatchObject:
        # Checked up front: inside the batch an unknown or oversized file would only be counted as failed,
        # with no record saying why.
        if vector_store_id not in self.openai_vector_stores:
            raise VectorStoreNotFoundError(vector_store_id)
        for file_id in params.file_ids:
            await self._check_attachable(file_id)
        return await super().openai_create_vector_store_file_batch(vector_store_id, params)

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
