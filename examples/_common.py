"""Helpers shared by the seed examples: the client, a fresh store, the model to answer with."""

import argparse
import os
import uuid
from pathlib import Path

from llama_stack_client import LlamaStackClient

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "corpus"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIMENSION = 384


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--url, and --api-key: the bearer token a server with auth on expects (docs/security.md)."""
    parser.add_argument("--url", default="http://localhost:8321")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLAMA_STACK_CLIENT_API_KEY"),
        help="bearer token for a server with auth on (env LLAMA_STACK_CLIENT_API_KEY)",
    )


def fresh_store(client: LlamaStackClient, name: str):
    """A new, empty vector store named `name`; stores of that name are deleted first (the seeds drop theirs).
    It embeds queries with EMBEDDING_MODEL, the model `embed` uses for the chunks the seeds insert themselves."""
    for store in client.vector_stores.list():
        if store.name == name:
            client.vector_stores.delete(store.id)
    return client.vector_stores.create(
        name=name, extra_body={"embedding_model": EMBEDDING_MODEL, "embedding_dimension": EMBEDDING_DIMENSION}
    )


def chat_model(client: LlamaStackClient, requested: str | None) -> str:
    """The requested model, or the server's first chat model (the local SmolLM2 on milvus-embedded)."""
    if requested:
        return requested
    return next(model.id for model in client.models.list() if model.model_type == "llm")


def embed(client: LlamaStackClient, texts: list[str], batch: int = 64) -> list[list[float]]:
    """Embeddings computed by the server's all-MiniLM-L6-v2 (normalised: inner product equals cosine)."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch):
        response = client.embeddings.create(model=EMBEDDING_MODEL, input=texts[start : start + batch])
        vectors += [item.embedding for item in response.data]
    return vectors


def insert_chunks(client: LlamaStackClient, store_id: str, texts: list[str], sources: list[str]) -> None:
    """Embeds `texts` with the server's model and inserts them as chunks whose `source` attribute is their file."""
    chunks = [
        {
            "chunk_id": str(uuid.uuid4()),
            "content": text,
            "metadata": {"source": source},
            "chunk_metadata": {"document_id": source, "source": source},
            "embedding": vector,
            "embedding_dimension": EMBEDDING_DIMENSION,
            "embedding_model": EMBEDDING_MODEL,
        }
        for text, source, vector in zip(texts, sources, embed(client, texts), strict=True)
    ]
    client.vector_io.insert(vector_store_id=store_id, chunks=chunks)
