"""keyword_analyzer: "english" stems where Milvus has the English analyser (Milvus Lite 2.5, servers 2.5+), the stack
refuses to start with it where Milvus has not (Milvus Lite 3.x), and a collection keeps the analyser it was created
with.

Only stemming can match the query "mirroring" to the text "mirrored"; "mirrored" itself matches under any analyser.
"""

import importlib.metadata
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from llama_stack_api import ChunkMetadata, EmbeddedChunk
from llama_stack_client import LlamaStackClient

from llama_stack_milvus.vector_io.backend import open_lite_backend
from llama_stack_milvus.vector_io.config import InlineMilvusConfig
from llama_stack_milvus.vector_io.index import MilvusIndex
from llama_stack_milvus_devtools.stack import EMBEDDED_RUN_YAML, without_local_llm

PERSISTENCE = {"namespace": "vector_io::milvus", "backend": "kv_default"}
TEXTS = {
    "mirror": "Debian archives are mirrored nightly to every continent.",
    "cat": "A cat sleeps on the sofa all afternoon.",
}
STEM_ONLY_QUERY = "mirroring"
EXACT_QUERY = "mirrored"


def english_analyser_here() -> bool:
    """Milvus Lite 2.5 has Milvus' English analyser; Lite 3.x has only `standard` and `jieba`."""
    return int(importlib.metadata.version("milvus-lite").split(".")[0]) < 3


def embedded_chunk(key: str, embedding: np.ndarray) -> EmbeddedChunk:
    return EmbeddedChunk(
        content=TEXTS[key],
        chunk_id=key,
        metadata={"document_id": key},
        chunk_metadata=ChunkMetadata(chunk_id=key, document_id=key),
        embedding=[float(x) for x in embedding],
        embedding_model="any",
        embedding_dimension=len(embedding),
    )


async def keyword_ids(index: MilvusIndex, query: str) -> list[str]:
    return [chunk.chunk_id for chunk in (await index.query_keyword(query, 5, 0.0)).chunks]


async def test_a_collection_keeps_the_analyser_it_was_created_with(tmp_path) -> None:
    standard = InlineMilvusConfig(db_path=str(tmp_path / "milvus.db"), persistence=PERSISTENCE)
    english = standard.model_copy(update={"keyword_analyzer": "english"})
    backend = open_lite_backend(standard)
    try:
        assert backend.capabilities.english_analyzer is english_analyser_here()
        vectors = np.eye(4)[: len(TEXTS)]
        chunks = [embedded_chunk(key, vector) for key, vector in zip(TEXTS, vectors, strict=True)]
        old = MilvusIndex(backend, "vs_made_standard", 4, standard)
        await old.create()
        await old.add_chunks(chunks)
        assert await keyword_ids(old, STEM_ONLY_QUERY) == []
        if not english_analyser_here():
            return
        # The same store after a restart with keyword_analyzer: english: its collection is not made again.
        reopened = MilvusIndex(backend, "vs_made_standard", 4, english)
        await reopened.create()
        new = MilvusIndex(backend, "vs_made_english", 4, english)
        await new.create()
        await new.add_chunks(chunks)

        assert await keyword_ids(reopened, STEM_ONLY_QUERY) == []
        assert await keyword_ids(reopened, EXACT_QUERY) == ["mirror"]
        assert await keyword_ids(new, STEM_ONLY_QUERY) == ["mirror"]
        assert await keyword_ids(new, EXACT_QUERY) == ["mirror"]
    finally:
        backend.close()


# ------------------------------------------------------------------------------------ through a real server


def run_yaml(target: Path, analyzer: str) -> Path:
    """The embedded distribution with keyword_analyzer set, without its local LLM (not needed here)."""
    config = without_local_llm(yaml.safe_load(EMBEDDED_RUN_YAML.read_text()))
    config["providers"]["vector_io"][0]["config"]["keyword_analyzer"] = analyzer
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def store_with_the_texts(client: LlamaStackClient, name: str) -> str:
    store = client.vector_stores.create(name=name)
    for key, text in TEXTS.items():
        file_id = client.files.create(file=(f"{key}.txt", text.encode()), purpose="assistants").id
        client.vector_stores.files.create(store.id, file_id=file_id)
        deadline = time.monotonic() + 120
        status = client.vector_stores.files.retrieve(file_id, vector_store_id=store.id)
        while status.status == "in_progress" and time.monotonic() < deadline:
            time.sleep(0.5)
            status = client.vector_stores.files.retrieve(file_id, vector_store_id=store.id)
        assert status.status == "completed", status.last_error
    return store.id


def keyword_files(client: LlamaStackClient, store_id: str, query: str) -> list[str]:
    page = client.vector_stores.search(vector_store_id=store_id, query=query, search_mode="keyword")
    return [hit.filename for hit in page.data]


@pytest.mark.server
def test_english_analyser_through_the_server_for_new_stores_only(make_server, tmp_path) -> None:
    server = make_server("analyser", run_yaml=run_yaml(tmp_path / "standard.yaml", "standard"))
    client = LlamaStackClient(base_url=server.base_url, timeout=120, max_retries=0)
    before = store_with_the_texts(client, "made-standard")
    assert keyword_files(client, before, STEM_ONLY_QUERY) == []

    server.stop()
    server.run_yaml = run_yaml(tmp_path / "english.yaml", "english")
    if not english_analyser_here():
        with pytest.raises(RuntimeError) as refused:
            server.start()
        server.stop()
        assert "keyword_analyzer is english" in str(refused.value) and "Set keyword_analyzer: standard" in str(
            refused.value
        )
        return
    server.start()
    client = LlamaStackClient(base_url=server.base_url, timeout=120, max_retries=0)
    after = store_with_the_texts(client, "made-english")

    assert keyword_files(client, after, STEM_ONLY_QUERY) == ["mirror.txt"]
    assert keyword_files(client, before, STEM_ONLY_QUERY) == []
    for store_id in (before, after):
        assert keyword_files(client, store_id, EXACT_QUERY) == ["mirror.txt"]
