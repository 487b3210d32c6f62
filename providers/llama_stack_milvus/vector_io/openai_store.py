"""Our layer over Llama Stack 0.7.3's OpenAIVectorStoreMixin (the OpenAI vector-store, file and batch bookkeeping).
Every departure from the mixin is here, so an upgrade of Llama Stack means reading this one module. Where and why:

Chunking
- 'auto' chunking uses the distribution's file_ingestion_params. The router rewrites 'auto' into a static
  800/400-token strategy before we see it, so that exact strategy is read as 'auto' too.
File contents
- a file's chunks are stored under one kvstore key (the mixin writes one key, a connection and a commit per chunk,
  and reads them back in key order 0, 1, 10, 100, ...); files stored the mixin's way still load;
- each chunk's embedding is stored as the base64 of its float64s, not as a JSON list of numbers: the same values
  back, a third of the bytes, and a tenth of the CPU to write (the JSON of 2,000 chunks' vectors took 0.5 s).
Search
- input is validated first (every mistake a 400 naming the field; filters parsed once, see filters.py), and
  errors propagate (the mixin turns every exception into an empty 200);
- a score_threshold the request sets holds for every score, negative cosines included (the mixin passes the API's
  default 0.0 along as if sent, and our index used to read any threshold <= 0 as none);
- ranker "neural" is checked before the search (no model, an unknown one, one that is not a rerank model: a 400) and
  a failing reranker is a 503 (the mixin's path returns the unreranked list), see rerank.py; its candidates are
  over-fetched like hybrid's;
- a hybrid search asks the index for the hits it returns, fused from legs `chunk_multiplier` times deeper
  (hybrid_depth), where the mixin asked for all of the deeper list and cut it here: the same hits, without
  materialising rows that are then dropped;
- extra body fields `explain` and `group_by_file` (search_options.py; the request model is made to keep extra
  fields, an unknown one is a 400); explanations go in each hit's content[0].metadata["explanation"] (explain.py);
- extra body field `quote`: the chunk's best supporting sentence with its offsets, in content[0].metadata["quote"]
  (quote.py).
Shared state (several replicas or workers on one kvstore; each used to trust its own copy, loaded at start-up)
- stores, files and batches are read through to the kvstore on every call: one made through another process is
  there at once, one deleted elsewhere is a 404 at once;
- a store's file_ids, file_counts and usage_bytes are derived from its per-file records (store_records.py), never
  written as a list; the rest of its record is merged by compare-and-set, only what the request changed (the
  mixin wrote back its whole copy: concurrent attaches and updates through two replicas lost each other's writes);
- a batch's counts while it runs come from its files' records: the same through every replica;
- a batch cancelled through another process stops at the running process' next save.
Attach
- one attach (or delete) of a file in a store at a time, in every process: a lease (leases.py) (concurrent
  attaches of one file each did the work and listed it twice);
- unknown and oversized files are refused before any work; a failed file keeps a last_error that says why;
- in a batch or a new store's file_ids, such files become failed files naming the reason (the mixin dropped them
  silently from a new store, and we used to refuse the whole batch);
- usage_bytes is the UTF-8 size of the text stored (the mixin: always 0).
Expiry
- expires_after is validated (a 400 naming the bad part) and enforced: an expired store is gone from reads, lists
  and searches, and its records and collection are removed; last_active_at moves with use, at most hourly (the
  mixin stored the policy and never applied it).
Unknown ids
- a file or batch id the store does not hold is a 404 naming it (the mixin: a 400, or an empty 200 for contents).
Crashes and restarts
- unfinished batches, and attaches cut short by a crash or a shutdown, are resumed by exactly one process: the one
  that takes their lease once it has expired (each process sweeps for them every lease period); the mixin resumed
  every batch in every process, in the start-up event loop, whose end cancelled them for good;
- batches and resumed attaches run as the request that started them (caller and provider data, see
  request_context.py), never as whichever request the server handled first.
(Each was found by a test; tests/integration/test_reliability_*.py reproduce them.)
"""

import asyncio
import base64
import contextlib
import contextvars
import functools
import json
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from llama_stack.log import get_logger
from llama_stack.providers.utils.memory.openai_vector_store_mixin import (
    OPENAI_VECTOR_STORES_FILE_BATCHES_PREFIX,
    OPENAI_VECTOR_STORES_FILES_CONTENTS_PREFIX,
    OPENAI_VECTOR_STORES_FILES_PREFIX,
    OPENAI_VECTOR_STORES_PREFIX,
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
    OpenAIUpdateVectorStoreRequest,
    VectorStoreFileBatchObject,
    VectorStoreFileContentResponse,
    VectorStoreFileCounts,
    VectorStoreFileDeleteResponse,
    VectorStoreFileLastError,
    VectorStoreFileObject,
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
from .leases import Leases
from .quote import best_quote
from .search_options import OPTION_NAMES, ExplainedChunks, accept_extra_search_fields, parse_search_options
from .store_records import (
    DERIVED_FIELDS,
    FILE_STATUSES,
    attach_lease,
    derived_membership,
    expiry,
    stored_text_bytes,
    validate_expires_after,
)

# One key per attach in flight, holding its request: the mixin writes a file's record only once it is done.
ATTACHING_PREFIX = "llama_stack_milvus:attaching:v1::"
# Where a batch's record keeps the context (caller, provider data) of the request that created it.
REQUEST_CONTEXT_KEY = "request_context"
# Set while attaching the files of a batch or of a new store: a file that cannot be attached becomes a failed file.
RECORD_REFUSED_FILES: contextvars.ContextVar[bool] = contextvars.ContextVar("record_refused_files", default=False)
# Set while a listing reads its files' records one by one: the records as listed, for a file deleted meanwhile.
LISTED_FILES: contextvars.ContextVar[dict[str, dict[str, Any]] | None] = contextvars.ContextVar(
    "listed_files", default=None
)
SEARCH_MODES = ("vector", "keyword", "hybrid")
RANKERS = ("rrf", "weighted", "neural")
MAX_NUM_RESULTS = 50
ACTIVITY_RESOLUTION_S = 3600  # how stale last_active_at may be (expires_after counts in days)

logger = get_logger(name=__name__, category="vector_io::milvus")


class MilvusOpenAIVectorStoreMixin(OpenAIVectorStoreMixin):
    """Needs `self.config.max_file_mib` and `.lease_seconds`, the mixin's `self.kvstore` (with compare_and_set and
    delete_if, see kvstore.py), query_chunks / delete_chunks, and `_forget_store(id)` (drops a store's index)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before the mixin's __init__, which assigns openai_vector_stores (a property here).
        self._ready = False
        self._background_loop: asyncio.AbstractEventLoop | None = None
        self._shutting_down = False
        self._background: set[asyncio.Task] = set()
        self._store_records: dict[str, dict[str, Any]] = {}  # each store's record as last read from the kvstore
        self._handed_over: set[str] = set()  # batches whose lease another process took: no more writes from here
        self._batch_runners: dict[str, asyncio.Task] = {}  # the task of this process that runs each batch
        self.leases: Leases | None = None
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------------- shared state, read through

    # The mixin keeps stores and batches in process memory, loaded once at start-up, and reads them synchronously.
    # Every call below first brings the entries it uses up to date from the kvstore, which is the only source of
    # truth: with several replicas (or workers) on one kvstore, another process may have created, changed or deleted
    # them since. A store's file list, counts and usage are not kept in its record at all: they are derived from its
    # per-file records, so two processes attaching files to one store cannot overwrite each other's additions.

    async def _refresh_store(self, vector_store_id: str, *, files: bool = True) -> dict[str, Any] | None:
        """The store as the kvstore has it now (None when it does not exist or has expired), put where the mixin
        looks. ``files=False`` skips reading the file records (a search needs only the store's existence)."""
        raw = await self.kvstore.get(OPENAI_VECTOR_STORES_PREFIX + vector_store_id)
        info = json.loads(raw) if raw is not None else None
        if info is not None:
            info.update(expiry(info))
            if info["status"] == "expired":
                self._run_in_background(self._remove_store(vector_store_id))
                info = None
        if info is None:
            self._openai_vector_stores.pop(vector_store_id, None)
            self._store_records.pop(vector_store_id, None)
            self._forget_store(vector_store_id)
            return None
        self._store_records[vector_store_id] = json.loads(raw)
        cached = self._openai_vector_stores.get(vector_store_id)
        # Derived fields are missing from records loaded at start-up (they are not stored).
        if files or cached is None or "file_ids" not in cached:
            records = await self._file_records(vector_store_id)
            listed = LISTED_FILES.get()
            if listed is not None:
                listed.update({record["id"]: record for record in records})
            info.update(derived_membership(records))
        else:
            info.update({field: cached[field] for field in DERIVED_FIELDS})
        self._openai_vector_stores[vector_store_id] = info
        return info

    async def _touch(self, vector_store_id: str) -> None:
        """Marks the store used (last_active_at, the anchor of expires_after), at most once an hour: the mixin moved
        it only on updates, so a store in daily use expired as if idle."""
        info = self._openai_vector_stores.get(vector_store_id)
        now = int(time.time())
        if info is not None and now - int(info["last_active_at"]) >= ACTIVITY_RESOLUTION_S:
            touched = {**info, "last_active_at": now}
            await self._write_store(vector_store_id, {**touched, **expiry(touched)})

    async def _file_records(self, vector_store_id: str) -> list[dict[str, Any]]:
        prefix = f"{OPENAI_VECTOR_STORES_FILES_PREFIX}{vector_store_id}:"
        return [json.loads(raw) for raw in await self.kvstore.values_in_range(prefix, prefix + "\xff")]

    async def _save_openai_vector_store(self, store_id: str, store_info: dict[str, Any]) -> None:
        await self._write_store(store_id, store_info)

    async def _update_openai_vector_store(self, store_id: str, store_info: dict[str, Any]) -> None:
        await self._write_store(store_id, store_info)

    async def _write_store(self, store_id: str, store_info: dict[str, Any]) -> None:
        """Writes only what this call changed in the store's record, merged into the record as it is now through
        compare-and-set: a rename on one replica and a metadata update on another both survive. The mixin writes
        back its whole copy, file list and counts included (it lost concurrent updates); those are derived here."""
        key = OPENAI_VECTOR_STORES_PREFIX + store_id
        before = self._store_records.get(store_id)
        record = {k: v for k, v in store_info.items() if k not in DERIVED_FIELDS}
        changes = record if before is None else {k: v for k, v in record.items() if before.get(k) != v}
        while changes:
            current = await self.kvstore.get(key)
            if current is None and before is not None:
                raise VectorStoreNotFoundError(store_id)  # deleted meanwhile, through another replica
            merged = {**(json.loads(current) if current else {}), **changes}
            if await self.kvstore.compare_and_set(key, current, json.dumps(merged)):
                self._store_records[store_id] = merged
                break
        self._openai_vector_stores[store_id] = store_info

    async def _delete_openai_vector_store_from_storage(self, store_id: str) -> None:
        # The mixin deletes the store's record only; its files' records and contents stayed behind for good.
        await super()._delete_openai_vector_store_from_storage(store_id)
        self._store_records.pop(store_id, None)
        for records in (OPENAI_VECTOR_STORES_FILES_PREFIX, OPENAI_VECTOR_STORES_FILES_CONTENTS_PREFIX):
            prefix = f"{records}{store_id}:"
            for key in await self.kvstore.keys_in_range(prefix, prefix + "\xff"):
                await self.kvstore.delete(key)

    async def _remove_store(self, vector_store_id: str) -> None:
        """Removes an expired store: its records, then its collection (as a delete through the API would)."""
        try:
            await self._delete_openai_vector_store_from_storage(vector_store_id)
            await self.unregister_vector_store(vector_store_id)
            logger.info("Removed an expired vector store", vector_store_id=vector_store_id)
        except Exception as e:  # the next sweep tries again
            logger.warning("Could not remove an expired vector store", vector_store_id=vector_store_id, error=str(e))

    async def _refresh_batch(self, batch_id: str) -> dict[str, Any] | None:
        raw = await self.kvstore.get(OPENAI_VECTOR_STORES_FILE_BATCHES_PREFIX + batch_id)
        if raw is None:
            self.openai_file_batches.pop(batch_id, None)
            return None
        self.openai_file_batches[batch_id] = json.loads(raw)
        return self.openai_file_batches[batch_id]

    async def _batch_file_counts(self, batch_info: dict[str, Any]) -> dict[str, int]:
        """A batch's counts from its files' records, so that any replica reports the same progress: a file with no
        record yet is still in progress (or cancelled with its batch)."""
        statuses = {r["id"]: r["status"] for r in await self._file_records(batch_info["vector_store_id"])}
        pending = "in_progress" if batch_info["status"] == "in_progress" else "cancelled"
        counts = Counter(statuses.get(file_id, pending) for file_id in batch_info["file_ids"])
        return {status: counts[status] for status in FILE_STATUSES} | {"total": len(batch_info["file_ids"])}

    async def openai_retrieve_vector_store(self, vector_store_id: str) -> VectorStoreObject:
        await self._refresh_store(vector_store_id)
        return await super().openai_retrieve_vector_store(vector_store_id)

    async def openai_update_vector_store(
        self, vector_store_id: str, request: OpenAIUpdateVectorStoreRequest
    ) -> VectorStoreObject:
        with invalid_request_on_value_error():
            validate_expires_after(request.expires_after)
        await self._refresh_store(vector_store_id)
        return await self._as_stored(await super().openai_update_vector_store(vector_store_id, request))

    async def openai_delete_vector_store(self, vector_store_id: str):
        await self._refresh_store(vector_store_id, files=False)
        return await super().openai_delete_vector_store(vector_store_id)

    # ------------------------------------------------------------- unfinished work: resumed by one process

    # The mixin reads this dict first in nearly every vector-store call: a way to learn that the server serves.
    @property
    def openai_vector_stores(self) -> dict[str, dict[str, Any]]:
        if self._ready:
            self.start_background_work()
        return self._openai_vector_stores

    @openai_vector_stores.setter
    def openai_vector_stores(self, value: dict[str, dict[str, Any]]) -> None:
        self._openai_vector_stores = value

    async def initialize_openai_vector_stores(self) -> None:
        self.leases = Leases(self.kvstore, self.config.lease_seconds)
        await super().initialize_openai_vector_stores()
        self._ready = True

    def start_background_work(self) -> None:
        """Llama Stack 0.7.3 initializes providers in a temporary event loop (StackApp.__init__ runs
        asyncio.run(stack.initialize())) and serves requests in uvicorn's. The mixin resumes in-progress batches
        from initialize(), so that loop's end cancelled them and saved them as "cancelled" for good. Our sweeps
        (resumes, expiries) and lease heartbeats start here instead, in the loop that lives on: when the server
        starts serving (http_contract calls this) or at the first vector-store call, whichever comes first."""
        if not self._ready:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is self._background_loop:
            return
        # Started in another loop (initialize()'s, which registers resources after _ready): that loop is gone.
        self._background_loop = loop
        self._run_in_background(self.leases.heartbeat())
        self._run_in_background(self._sweep_forever())

    def _run_in_background(self, work: Any, context: contextvars.Context | None = None) -> None:
        # By default an empty context: the request that happens to be running must not lend its identity to the work.
        task = asyncio.get_running_loop().create_task(work, context=context or contextvars.Context())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sweep_forever(self) -> None:
        """Every lease period: take over batches and attaches whose process died (its lease expired), and remove
        expired stores. Several replicas sweep; the lease decides which one resumes each piece of work."""
        while True:
            try:
                await self._resume_incomplete_batches()
                await self._resume_interrupted_attaches()
                await self._remove_expired_stores()
            except Exception as e:  # e.g. the kvstore is down: the next sweep tries again
                logger.warning("A sweep for unfinished work failed", error=str(e))
            await asyncio.sleep(self.config.lease_seconds * random.uniform(0.8, 1.2))

    async def _resume_incomplete_batches(self) -> None:
        if self._background_loop is None:  # the mixin calls this from initialize() too: see start_background_work
            return
        prefix = OPENAI_VECTOR_STORES_FILE_BATCHES_PREFIX
        for raw in await self.kvstore.values_in_range(prefix, prefix + "\xff"):
            batch_info = json.loads(raw)
            batch_id = batch_info["id"]
            lease = f"batch:{batch_id}"
            # A lease this process holds is a batch it runs: only another process' expired lease is taken over.
            if batch_info["status"] != "in_progress" or self.leases.holds(lease) or batch_id in self._batch_runners:
                continue
            if not await self.leases.acquire(lease):
                continue
            self.openai_file_batches[batch_id] = batch_info
            await self._refresh_store(batch_info["vector_store_id"])
            logger.info("Resuming a file batch", batch_id=batch_id)
            remaining = await self._analyze_batch_completion_on_resume(batch_id, batch_info)
            if batch_info["status"] == "completed" or not remaining:
                await self.leases.release(lease)
                continue
            task = asyncio.create_task(self._process_file_batch_async(batch_id, batch_info, remaining))
            self._file_batch_tasks[batch_id] = task

    async def _process_file_batch_async(
        self, batch_id: str, batch_info: dict[str, Any], file_ids_override: list[str] | None = None
    ) -> None:
        """Runs the batch while holding its lease (another process that finds it unfinished leaves it alone), as the
        batch's creator (a resumed batch too), recording unknown or oversized files as failed files. One task per
        batch in this process too: a sweep may find a batch between its creation and its task's start."""
        task = asyncio.current_task()
        runner = self._batch_runners.get(batch_id)
        if runner is not None and runner is not task and not runner.done():
            return
        self._batch_runners[batch_id] = task
        lease = f"batch:{batch_id}"
        try:
            on_lost = functools.partial(self._hand_over, batch_id, task)
            if self.leases.holds(lease):  # taken for this task by the sweep that resumes the batch
                self.leases.watch(lease, on_lost)
            elif not await self.leases.acquire(lease, on_lost=on_lost):
                return  # another process took it up between its creation and now
            try:
                with request_context.restore(batch_info.get(REQUEST_CONTEXT_KEY)):
                    recording = RECORD_REFUSED_FILES.set(True)
                    try:
                        await super()._process_file_batch_async(batch_id, batch_info, file_ids_override)
                    finally:
                        RECORD_REFUSED_FILES.reset(recording)
            finally:
                await self.leases.release(lease)
        finally:
            if self._batch_runners.get(batch_id) is task:
                del self._batch_runners[batch_id]

    def _hand_over(self, batch_id: str, task: asyncio.Task | None) -> None:
        self._handed_over.add(batch_id)
        if task is not None:
            task.cancel()

    async def _save_openai_vector_store_file_batch(self, batch_id: str, batch_info: dict[str, Any]) -> None:
        # The first save happens in the request that creates the batch: its caller is who the batch runs as.
        batch_info.setdefault(REQUEST_CONTEXT_KEY, request_context.capture())
        self.openai_file_batches[batch_id] = batch_info
        if batch_id in self._handed_over:
            return
        record = batch_info
        if self._shutting_down and batch_info["status"] == "cancelled":
            # Cancelled by the shutdown, not by the user: stays in progress, for this or another process to resume.
            record = {**batch_info, "status": "in_progress"}
        elif batch_info["status"] != "in_progress":
            record = {**batch_info, "file_counts": await self._batch_file_counts(batch_info)}
        key = OPENAI_VECTOR_STORES_FILE_BATCHES_PREFIX + batch_id
        while True:
            current = await self.kvstore.get(key)
            if current is not None and record["status"] != "cancelled" and json.loads(current)["status"] == "cancelled":
                # Cancelled through another replica: the process running it stops at its next save.
                batch_info["status"] = "cancelled"
                if asyncio.current_task() is self._file_batch_tasks.get(batch_id):
                    raise asyncio.CancelledError
                return
            if await self.kvstore.compare_and_set(key, current, json.dumps(record)):
                return

    async def _resume_interrupted_attaches(self) -> None:
        """Attaches that a crash (kill -9, power loss) cut short: nothing of them is recorded, yet some of their
        chunks may be in Milvus. Attaching again upserts the same chunk ids (they derive from the file and the
        text), so the file ends completed or failed with a reason and no chunk is stored twice. An attach whose
        lease is live is still running somewhere; files of an unfinished batch are resumed with their batch."""
        prefix = OPENAI_VECTOR_STORES_FILE_BATCHES_PREFIX
        batched = {
            (batch["vector_store_id"], file_id)
            for batch in map(json.loads, await self.kvstore.values_in_range(prefix, prefix + "\xff"))
            if batch["status"] == "in_progress"
            for file_id in batch["file_ids"]
        }
        for key in await self.kvstore.keys_in_range(ATTACHING_PREFIX, ATTACHING_PREFIX + "\xff"):
            raw = await self.kvstore.get(key)
            if raw is None:
                continue
            if not raw.startswith("{"):  # written by 0.2: "<store id>\n<request>"
                store_id, request_json = raw.split("\n", 1)
                raw = json.dumps({"vector_store_id": store_id, "request": json.loads(request_json)})
            record = json.loads(raw)
            vector_store_id = record["vector_store_id"]
            request = OpenAIAttachFileRequest.model_validate(record["request"])
            if (vector_store_id, request.file_id) in batched or await self.leases.held_elsewhere(
                attach_lease(vector_store_id, request.file_id)
            ):
                continue
            store = await self._refresh_store(vector_store_id)
            if store is None or request.file_id in store["file_ids"]:
                await self.kvstore.delete(key)
                continue
            logger.info("Resuming an interrupted attach", vector_store_id=vector_store_id, file_id=request.file_id)
            with request_context.restore(record.get(REQUEST_CONTEXT_KEY)):  # the attach runs as its requester
                self._run_in_background(self._resume_attach(vector_store_id, request), contextvars.copy_context())

    async def _resume_attach(self, vector_store_id: str, request: OpenAIAttachFileRequest) -> None:
        try:
            result = await self.openai_attach_file_to_vector_store(vector_store_id, request)
        except Exception as e:  # e.g. the file was deleted from the Files API meanwhile
            logger.error("Could not resume an interrupted attach", file_id=request.file_id, error=str(e))
            return
        logger.info("Resumed an interrupted attach", file_id=request.file_id, status=result.status)

    async def _remove_expired_stores(self) -> None:
        prefix = OPENAI_VECTOR_STORES_PREFIX
        for raw in await self.kvstore.values_in_range(prefix, prefix + "\xff"):
            info = json.loads(raw)
            if expiry(info)["status"] == "expired":
                await self._remove_store(info["id"])

    async def shutdown(self) -> None:
        self._shutting_down = True
        for task in list(self._background):
            task.cancel()
        await super().shutdown()
        if self.leases is not None:
            await self.leases.release_all()

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
        with invalid_request_on_value_error():
            validate_expires_after(params.expires_after)
        if self._is_auto(params.chunking_strategy):
            params = params.model_copy(update={"chunking_strategy": self._default_chunking()})
        recording = RECORD_REFUSED_FILES.set(True)  # the store is made even if some of its file_ids are bad
        try:
            created = await super().openai_create_vector_store(params)
        finally:
            RECORD_REFUSED_FILES.reset(recording)
        return await self._as_stored(created)

    async def _as_stored(self, answer: VectorStoreObject) -> VectorStoreObject:
        """The store as a later retrieve shows it (the mixin answers from its own copy: no expires_at, no usage)."""
        stored = await self._refresh_store(answer.id)
        return VectorStoreObject(**stored) if stored is not None else answer

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
        # The mixin leaves usage_bytes at 0: it is the size of the text stored for the file (UTF-8).
        file_info = {**file_info, "usage_bytes": stored_text_bytes(file_contents)}
        await self.kvstore.set(key=f"{prefix}0", value=json.dumps([packed(chunk) for chunk in file_contents]))
        # The record last: it is what lists the file in the store (see _refresh_store), so its chunks are there.
        await self.kvstore.set(
            key=f"{OPENAI_VECTOR_STORES_FILES_PREFIX}{store_id}:{file_id}", value=json.dumps(file_info)
        )
        for key in stale:
            await self.kvstore.delete(key)

    async def _load_openai_vector_store_file(self, store_id: str, file_id: str) -> dict[str, Any]:
        raw = await self.kvstore.get(f"{OPENAI_VECTOR_STORES_FILES_PREFIX}{store_id}:{file_id}")
        if raw is not None:
            return json.loads(raw)
        # Deleted by another request after this one read the store's file list: shown as it was then (the mixin's
        # listing failed on it with a 500).
        listed = (LISTED_FILES.get() or {}).get(file_id)
        if listed is None:
            raise VectorStoreFileNotFoundError(file_id, store_id)
        return listed

    async def _load_openai_vector_store_file_contents(self, store_id: str, file_id: str) -> list[dict[str, Any]]:
        prefix = self._contents_prefix(store_id, file_id)
        chunks: list[dict[str, Any]] = []
        for raw in await self.kvstore.values_in_range(prefix, prefix + "\xff"):
            stored = json.loads(raw)
            chunks.extend(unpacked(chunk) for chunk in (stored if isinstance(stored, list) else [stored]))
        return chunks

    @staticmethod
    def _contents_prefix(store_id: str, file_id: str) -> str:
        return f"{OPENAI_VECTOR_STORES_FILES_CONTENTS_PREFIX}{store_id}:{file_id}:"

    # -------------------------------------------------------------------------------------------- attaching

    async def openai_attach_file_to_vector_store(
        self, vector_store_id: str, request: OpenAIAttachFileRequest
    ) -> VectorStoreFileObject:
        if await self._refresh_store(vector_store_id, files=False) is None:
            raise VectorStoreNotFoundError(vector_store_id)
        await self._touch(vector_store_id)
        if self._is_auto(request.chunking_strategy):
            stored = self.openai_vector_stores[vector_store_id].get("chunking_strategy") or {}
            strategy = (
                VectorStoreChunkingStrategyStatic.model_validate(stored)
                if stored.get("type") == "static"
                else self._default_chunking()
            )
            request = request.model_copy(update={"chunking_strategy": strategy})
        async with self._file_lease(vector_store_id, request.file_id):
            # Read now: another replica may have attached the file (or deleted the store) while this one waited.
            if await self._refresh_store(vector_store_id) is None:
                raise VectorStoreNotFoundError(vector_store_id)
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
    async def _file_lease(self, vector_store_id: str, file_id: str) -> AsyncIterator[None]:
        """One attach (or delete) of a file in a store at a time, across every process on the kvstore. The mixin
        checks "already attached" before its awaits and appends the file when done: two concurrent attaches of one
        file (a client retrying after a timeout) both did the work and listed the file twice. The second now waits,
        then finds the file attached and returns its record."""
        lease = attach_lease(vector_store_id, file_id)
        await self.leases.acquire_waiting(lease)
        try:
            yield
        finally:
            await self.leases.release(lease)

    # ------------------------------------------------------------------------- deleting, listing, batches

    async def openai_delete_vector_store_file(
        self, vector_store_id: str, file_id: str
    ) -> VectorStoreFileDeleteResponse:
        """The mixin's delete removed the file's record before taking it out of the store's file list, and wrote back
        a copy of the store taken before its awaits: under 16 concurrent clients a listing met a file id with no
        record (a 400), and an attach that finished meanwhile vanished. Here the chunks go first, then the records,
        under the file's lease (no attach of it meanwhile); membership follows from the records."""
        await self._require_file(vector_store_id, file_id)
        async with self._file_lease(vector_store_id, file_id):
            contents = await self._load_openai_vector_store_file_contents(vector_store_id, file_id)
            chunks = [Chunk.model_validate(c) for c in contents]
            await self.delete_chunks(
                DeleteChunksRequest(
                    vector_store_id=vector_store_id,
                    chunks=[
                        ChunkForDeletion(chunk_id=c.chunk_id, document_id=c.document_id or file_id) for c in chunks
                    ],
                )
            )
            await self._delete_openai_vector_store_file_from_storage(vector_store_id, file_id)
        await self._refresh_store(vector_store_id)
        return VectorStoreFileDeleteResponse(id=file_id, deleted=True)

    async def openai_retrieve_vector_store_file_contents(
        self,
        vector_store_id: str,
        file_id: str,
        include_embeddings: bool | None = False,
        include_metadata: bool | None = False,
    ) -> VectorStoreFileContentResponse:
        # The mixin answers an unknown file id with an empty 200, as if the file had no text.
        await self._require_file(vector_store_id, file_id)
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
        # Called under the file's lease, after _refresh_store: the record alone lists and counts the file.
        if request.file_id in self.openai_vector_stores[vector_store_id]["file_ids"]:
            return VectorStoreFileObject(**await self._load_openai_vector_store_file(vector_store_id, file.id))
        await self._save_openai_vector_store_file(vector_store_id, file.id, {**file.model_dump(), "filename": ""}, [])
        await self._refresh_store(vector_store_id)
        return file

    # ------------------------------------------------------------------- unknown ids: a 404 naming them

    async def _require_file(self, vector_store_id: str, file_id: str) -> None:
        """The mixin raises a bare ValueError (a 400) for a file id the store does not hold; OpenAI answers 404."""
        store = await self._refresh_store(vector_store_id)
        if store is None:
            raise VectorStoreNotFoundError(vector_store_id)
        if file_id not in store["file_ids"]:
            raise VectorStoreFileNotFoundError(file_id, vector_store_id)

    async def _require_batch(self, vector_store_id: str, batch_id: str) -> dict[str, Any]:
        """As _require_file; a batch of another store is not found either (its existence does not leak)."""
        if await self._refresh_store(vector_store_id, files=False) is None:
            raise VectorStoreNotFoundError(vector_store_id)
        batch = await self._refresh_batch(batch_id)
        if batch is None or batch["vector_store_id"] != vector_store_id:
            raise VectorStoreFileBatchNotFoundError(batch_id, vector_store_id)
        return batch

    async def openai_retrieve_vector_store_file(self, vector_store_id: str, file_id: str) -> VectorStoreFileObject:
        await self._require_file(vector_store_id, file_id)
        return await super().openai_retrieve_vector_store_file(vector_store_id, file_id)

    async def openai_update_vector_store_file(
        self, vector_store_id: str, file_id: str, request: OpenAIUpdateVectorStoreFileRequest
    ) -> VectorStoreFileObject:
        await self._require_file(vector_store_id, file_id)
        return await super().openai_update_vector_store_file(vector_store_id, file_id, request)

    async def openai_list_files_in_vector_store(self, vector_store_id: str, *args: Any, **kwargs: Any):
        listing = LISTED_FILES.set({})  # this request's own copy of the records it lists
        try:
            await self._refresh_store(vector_store_id)
            return await super().openai_list_files_in_vector_store(vector_store_id, *args, **kwargs)
        finally:
            LISTED_FILES.reset(listing)

    async def openai_create_vector_store_file_batch(self, vector_store_id: str, params: Any):
        await self._refresh_store(vector_store_id, files=False)
        return await super().openai_create_vector_store_file_batch(vector_store_id, params)

    async def openai_retrieve_vector_store_file_batch(
        self, batch_id: str, vector_store_id: str
    ) -> VectorStoreFileBatchObject:
        batch = await self._require_batch(vector_store_id, batch_id)
        result = await super().openai_retrieve_vector_store_file_batch(batch_id, vector_store_id)
        if batch["status"] != "in_progress":
            return result
        return result.model_copy(update={"file_counts": VectorStoreFileCounts(**await self._batch_file_counts(batch))})

    async def openai_list_files_in_vector_store_file_batch(self, batch_id: str, vector_store_id: str, *args, **kwargs):
        await self._require_batch(vector_store_id, batch_id)
        await self._refresh_store(vector_store_id)
        return await super().openai_list_files_in_vector_store_file_batch(batch_id, vector_store_id, *args, **kwargs)

    async def openai_cancel_vector_store_file_batch(
        self, batch_id: str, vector_store_id: str
    ) -> VectorStoreFileBatchObject:
        await self._require_batch(vector_store_id, batch_id)
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
        if await self._refresh_store(vector_store_id, files=False) is None:
            raise VectorStoreNotFoundError(vector_store_id)
        await self._touch(vector_store_id)
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
        # Read deeper for hybrid, where the fusion profits from deeper lists, and for a reranker, which can only
        # promote what it is given. A vector or keyword search ranks the same candidates whatever its limit (HNSW's
        # ef is fixed at >= 256), so a deeper fetch only costs. A hybrid search returns only the hits asked for,
        # fused from legs that deep (hybrid_depth); the reranker is given the deeper list itself.
        neural = ranking is not None and ranking.ranker == "neural"
        depth = max_num_results * self.vector_stores_config.chunk_retrieval_params.chunk_multiplier
        params: dict[str, Any] = {
            "mode": mode,
            "max_num_results": max_num_results,
            "max_chunks": depth if neural else max_num_results,
        }
        if mode == "hybrid" and not neural:
            params["hybrid_depth"] = depth
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


def packed(chunk: dict[str, Any]) -> dict[str, Any]:
    """The chunk as stored: its embedding (a list of floats) as the base64 of little-endian float64s."""
    embedding = chunk.get("embedding")
    if not isinstance(embedding, list):
        return chunk
    return {**chunk, "embedding": base64.b64encode(np.asarray(embedding, dtype="<f8").tobytes()).decode("ascii")}


def unpacked(chunk: dict[str, Any]) -> dict[str, Any]:
    """The chunk as the mixin stores it (embedding a list of floats); chunks stored as lists pass unchanged."""
    embedding = chunk.get("embedding")
    if not isinstance(embedding, str):
        return chunk
    return {**chunk, "embedding": np.frombuffer(base64.b64decode(embedding), dtype="<f8").tolist()}


# Before the server builds its routes from the request models (see search_options.py).
accept_extra_search_fields()
