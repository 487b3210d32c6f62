"""llama-stack-milvus-migrate: a Milvus Lite 2.x file's stores, exported under Lite 2.5, imported into a Lite 3.x
file and into a Milvus server, answer searches as before (BM25 rebuilt from the text)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llama_stack_milvus.vector_io.backend import open_lite_backend, open_remote_backend
from llama_stack_milvus.vector_io.config import InlineMilvusConfig, RemoteMilvusConfig
from llama_stack_milvus.vector_io.filters import parse_filters
from llama_stack_milvus.vector_io.index import MilvusIndex
from llama_stack_milvus_devtools.milvus import start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
LITE25_PYTHON = ROOT / ".venv-lite25" / "bin" / "python"
PERSISTENCE = {"namespace": "vector_io::milvus", "backend": "kv_default"}

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not LITE25_PYTHON.exists(), reason="needs .venv-lite25 (./scripts/test builds it)"),
]

TEXTS = {
    "json": "JSON (JavaScript Object Notation) is a lightweight data interchange format inspired by JavaScript.",
    "csv": "The csv module implements classes to read and write tabular data in comma separated values format.",
    "sqlite": "SQLite is a C library that provides a lightweight disk-based database without a separate server.",
}
WRITE_25_FILE = """
import asyncio, json, sys
from llama_stack_api import ChunkMetadata, EmbeddedChunk
from llama_stack_milvus.vector_io.backend import open_lite_backend
from llama_stack_milvus.vector_io.config import InlineMilvusConfig
from llama_stack_milvus.vector_io.index import MilvusIndex

db_path, rows_path = sys.argv[1:]
config = InlineMilvusConfig(db_path=db_path, persistence={"namespace": "n", "backend": "b"})
index = MilvusIndex(open_lite_backend(config), "vs_old", 384, config)
chunks = [
    EmbeddedChunk(content=row["text"], chunk_id=row["name"], metadata={"document_id": "file-" + row["name"],
                  "topic": row["name"]}, chunk_metadata=ChunkMetadata(chunk_id=row["name"]),
                  embedding=row["embedding"], embedding_model="all-MiniLM-L6-v2", embedding_dimension=384)
    for row in json.load(open(rows_path))
]
asyncio.run(index.create())
asyncio.run(index.add_chunks(chunks))
import milvus_lite; print(milvus_lite.__version__)
"""


@pytest.fixture(scope="module")
def embed():
    from sentence_transformers import SentenceTransformer

    from llama_stack_milvus.offline import ensure_embedding_model

    ensure_embedding_model()
    model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
    return lambda text: model.encode([text], normalize_embeddings=True)[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, embed) -> Path:
    work = tmp_path_factory.mktemp("migrate")
    rows = [{"name": name, "text": text, "embedding": embed(text).tolist()} for name, text in TEXTS.items()]
    (work / "rows.json").write_text(json.dumps(rows))
    old_db = work / "old.db"
    made = subprocess.run(
        [LITE25_PYTHON, "-c", WRITE_25_FILE, old_db, work / "rows.json"], capture_output=True, text=True, check=True
    )
    assert made.stdout.strip().startswith("2.5"), made.stdout
    assert old_db.is_file()  # Lite 2.x keeps a single SQLite file; 3.x writes a directory
    out = work / "dump"
    done = subprocess.run(
        [LITE25_PYTHON, "-m", "llama_stack_milvus.migrate", "export", "--from-db", old_db, "--out", out],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1 collections, 3 rows" in done.stdout
    return out


async def assert_store_answers(index: MilvusIndex, embed) -> None:
    assert await index.count() == 3
    query = "read and write comma separated values"
    vector_hit = await index.query_vector(embed(query), 3, 0.0)
    keyword_hit = await index.query_keyword(query, 3, 0.0)
    only_sqlite = parse_filters({"type": "eq", "key": "topic", "value": "sqlite"})
    filtered = await index.query_vector(embed(query), 3, 0.0, only_sqlite)
    assert vector_hit.chunks[0].chunk_id == keyword_hit.chunks[0].chunk_id == "csv"
    assert [c.chunk_id for c in filtered.chunks] == ["sqlite"]


async def test_lite2_file_moves_into_a_lite3_file(exported, tmp_path, embed) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "llama_stack_milvus.migrate",
            "import",
            "--in",
            exported,
            "--to-db",
            tmp_path / "new.db",
        ],
        check=True,
        capture_output=True,
    )
    config = InlineMilvusConfig(db_path=str(tmp_path / "new.db"), persistence=PERSISTENCE)
    backend = open_lite_backend(config)
    await assert_store_answers(MilvusIndex(backend, "vs_old", 384, config), embed)
    backend.close()


async def test_lite2_file_moves_into_a_milvus_server(exported, tmp_path, embed) -> None:
    server = start_server("lite", tmp_path / "server")
    try:
        subprocess.run(
            [sys.executable, "-m", "llama_stack_milvus.migrate", "import", "--in", exported, "--to-uri", server.uri],
            check=True,
            capture_output=True,
        )
        config = RemoteMilvusConfig(uri=server.uri, persistence=PERSISTENCE)
        backend = open_remote_backend(config)
        await assert_store_answers(MilvusIndex(backend, "vs_old", 384, config), embed)
        backend.close()
    finally:
        stop_server(server)


def test_import_refuses_a_folder_without_manifest(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llama_stack_milvus.migrate", "import", "--in", tmp_path, "--to-db", tmp_path / "x.db"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "has no manifest.json" in done.stderr
