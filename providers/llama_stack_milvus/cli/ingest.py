"""`llama-stack-milvus ingest`: documents into a named vector store, skipping those unchanged since last time."""

import io
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from llama_stack_client import APIError, LlamaStackClient
from tqdm import tqdm

from .documents import DEFAULT_URL_POLICY, Candidate, Document, DocumentError, expand, load
from .fetch import UrlPolicy

POLL_INTERVAL_S = 0.5
ATTACH_TIMEOUT_S = 600.0


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.ingested)} files ingested, {self.chunks} chunks, {len(self.unchanged)} unchanged, "
            f"{len(self.errors)} errors, {self.seconds:.1f} s"
        )


def find_store(client: LlamaStackClient, name: str) -> Any | None:
    """The vector store with this name (the newest if several), or None."""
    matches = [store for store in client.vector_stores.list() if store.name == name]
    return max(matches, key=lambda store: store.created_at) if matches else None


def ingested_files(client: LlamaStackClient, store_id: str) -> dict[str, Any]:
    """source attribute -> the store's file carrying it (files ingested by other means have none)."""
    files = {}
    for stored in client.vector_stores.files.list(vector_store_id=store_id):
        source = (stored.attributes or {}).get("source")
        if isinstance(source, str):
            files[source] = stored
    return files


def chunking_strategy(chunk_size_tokens: int | None, chunk_overlap_tokens: int | None) -> dict[str, Any] | None:
    if chunk_size_tokens is None:
        return None  # the server's default (160/32 tokens in our distributions)
    overlap = chunk_overlap_tokens if chunk_overlap_tokens is not None else chunk_size_tokens // 5
    return {
        "type": "static",
        "static": {"max_chunk_size_tokens": chunk_size_tokens, "chunk_overlap_tokens": overlap},
    }


def attach(client: LlamaStackClient, store_id: str, document: Document, chunking: dict[str, Any] | None) -> int:
    """Uploads the document and attaches it to the store; returns its chunk count. Raises DocumentError."""
    uploaded = client.files.create(file=(document.filename, io.BytesIO(document.data)), purpose="assistants")
    try:
        kwargs: dict[str, Any] = {"attributes": document.attributes}
        if chunking:
            kwargs["chunking_strategy"] = chunking
        stored = client.vector_stores.files.create(vector_store_id=store_id, file_id=uploaded.id, **kwargs)
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while stored.status == "in_progress" and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            stored = client.vector_stores.files.retrieve(file_id=uploaded.id, vector_store_id=store_id)
        if stored.status != "completed":
            reason = stored.last_error.message if stored.last_error else stored.status
            raise DocumentError(f"{document.source}: the server could not ingest it ({reason})")
    except BaseException:
        _delete(client, store_id, uploaded.id)
        raise
    return len(client.vector_stores.files.content(file_id=uploaded.id, vector_store_id=store_id).data)


def _delete(client: LlamaStackClient, store_id: str, file_id: str) -> None:
    """Removes a file from the store and the files API; a file already gone is fine."""
    for delete in (
        lambda: client.vector_stores.files.delete(file_id=file_id, vector_store_id=store_id),
        lambda: client.files.delete(file_id),
    ):
        try:
            delete()
        except APIError:
            pass


def ingest(
    client: LlamaStackClient,
    store_name: str,
    targets: list[str],
    chunk_size_tokens: int | None = None,
    chunk_overlap_tokens: int | None = None,
    progress: bool = True,
    out: TextIO = sys.stdout,
    url_policy: UrlPolicy = DEFAULT_URL_POLICY,
) -> IngestReport:
    started = time.monotonic()
    report = IngestReport()
    store = find_store(client, store_name) or client.vector_stores.create(name=store_name)
    previous = ingested_files(client, store.id)
    chunking = chunking_strategy(chunk_size_tokens, chunk_overlap_tokens)
    found = list(expand(targets))
    bar = tqdm(found, desc=f"ingest into {store_name}", unit="file", disable=not progress, file=sys.stderr)

    def error(message: str) -> None:
        report.errors.append(message)
        bar.write(f"error: {message}", file=out)

    for item in bar:
        if isinstance(item, DocumentError):
            error(str(item))
            continue
        candidate: Candidate = item
        try:
            document = load(candidate, url_policy)
            old = previous.get(document.source)
            if old is not None and (old.attributes or {}).get("sha256") == document.sha256:
                report.unchanged.append(document.source)
                continue
            report.chunks += attach(client, store.id, document, chunking)
            report.ingested.append(document.source)
            if old is not None:
                _delete(client, store.id, old.id)  # only now: a failed re-ingest keeps the old version searchable
        except DocumentError as e:
            error(str(e))
        except APIError as e:
            error(f"{candidate.source}: the server refused it ({e})")
    report.seconds = time.monotonic() - started
    return report
