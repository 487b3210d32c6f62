"""The `llama-stack-milvus` console script (ingest, search, ask)."""

from .main import main

__all__ = ["main"]
