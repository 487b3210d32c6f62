"""Errors the provider raises; the stack turns their status_code into the HTTP status."""

import httpx
from llama_stack_api.common.errors import LlamaStackError


class MilvusBackendError(LlamaStackError):
    """Milvus failed or could not be reached: a 503 that names Milvus, never an empty success."""

    status_code: httpx.codes = httpx.codes.SERVICE_UNAVAILABLE


class MilvusFeatureUnsupportedError(LlamaStackError):
    """The Milvus backend lacks a feature the request needs (e.g. BM25 on Milvus < 2.5)."""

    status_code: httpx.codes = httpx.codes.NOT_IMPLEMENTED
