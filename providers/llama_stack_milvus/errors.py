"""Errors the providers raise; the stack turns their status_code into the HTTP status.

All derive from ConflictError only for its registered exception handler: Llama Stack 0.7.3 answers any other
exception through a generic handler that re-raises, and uvicorn then resets the client's keep-alive connection
after sending the error. translate_exception() reads our own status_code, so no 409 is ever sent.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from llama_stack_api import ConflictError, ResourceNotFoundError


class ProviderError(ConflictError):
    status_code: httpx.codes = httpx.codes.INTERNAL_SERVER_ERROR


class InvalidRequestError(ProviderError, ValueError):
    """The request is wrong: a 400 whose message says what to change."""

    status_code: httpx.codes = httpx.codes.BAD_REQUEST


class FileTooLargeError(ProviderError):
    """A file above the configured ingestion limit: a 413 that states the limit."""

    status_code: httpx.codes = httpx.codes.REQUEST_ENTITY_TOO_LARGE


class MilvusBackendError(ProviderError):
    """Milvus failed or could not be reached: a 503 that names Milvus, never an empty success."""

    status_code: httpx.codes = httpx.codes.SERVICE_UNAVAILABLE


class MetadataStoreUnavailableError(ProviderError):
    """PostgreSQL, where the stack keeps its metadata, failed or could not be reached: a 503 that names it, the
    store and what was being done."""

    status_code: httpx.codes = httpx.codes.SERVICE_UNAVAILABLE

    def __init__(self, where: str, action: str, reason: str):
        super().__init__(f"PostgreSQL at {where} is unavailable while {action}: {reason}")


class MilvusOpenError(RuntimeError):
    """Milvus cannot be opened at start-up: a Lite file that will not open, a server that cannot be reached or refuses
    the credentials. One message shape for all: "Cannot open <which Milvus>: <why>. <what to do>"."""

    def __init__(self, description: str, reason: str, remedy: str):
        super().__init__(f"Cannot open {description}: {reason}. {remedy}")


class MilvusFeatureUnsupportedError(ProviderError):
    """The Milvus backend lacks a feature the request needs (e.g. BM25 on Milvus < 2.5)."""

    status_code: httpx.codes = httpx.codes.NOT_IMPLEMENTED


@contextmanager
def invalid_request_on_value_error() -> Iterator[None]:
    """ValueErrors (ours, Llama Stack's embedding checks) are the caller's mistake: answer them as a 400."""
    try:
        yield
    except ProviderError:
        raise
    except ValueError as e:
        raise InvalidRequestError(str(e)) from e


class VectorStoreFileNotFoundError(ResourceNotFoundError):
    """A file id that is not in the vector store: a 404 naming both."""

    def __init__(self, file_id: str, vector_store_id: str) -> None:
        super().__init__(file_id, resource_type="File", parent_resource=f"vector store '{vector_store_id}'")


class VectorStoreFileBatchNotFoundError(ResourceNotFoundError):
    """A file batch id unknown in the vector store (or belonging to another store): a 404 naming both."""

    def __init__(self, batch_id: str, vector_store_id: str) -> None:
        super().__init__(batch_id, resource_type="File batch", parent_resource=f"vector store '{vector_store_id}'")
