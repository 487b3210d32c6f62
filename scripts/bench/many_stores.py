"""Many vector stores on one Milvus server: one collection per store (baseline) against one shared collection.

Creates N stores of a few chunks each in both collection modes on a fresh Milvus server started here, then times
searches of random stores and checks that no result ever comes from another store. Prints a table with the
ratio shared / per_store and writes it as JSON next to the data (--out).

    .venv/bin/python scripts/bench/many_stores.py --stores 1000 --kind lite
"""

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from llama_stack_api import ChunkMetadata, EmbeddedChunk

from llama_stack_milvus.vector_io.backend import open_remote_backend  # noqa: E402
from llama_stack_milvus.vector_io.config import RemoteMilvusConfig  # noqa: E402
from llama_stack_milvus.vector_io.index import MilvusIndex  # noqa: E402
from llama_stack_milvus_devtools.milvus import start_server, stop_server

DIMENSION = 384
CHUNKS_PER_STORE = 5
PERSISTENCE = {"namespace": "bench", "backend": "unused"}


def unit(rng: np.random.Generator) -> list[float]:
    vector = rng.standard_normal(DIMENSION)
    return (vector / np.linalg.norm(vector)).tolist()


def chunks_for(store: int, rng: np.random.Generator) -> list[EmbeddedChunk]:
    return [
        EmbeddedChunk(
            content=f"store {store} passage {n} about topic {rng.integers(100)}",
            chunk_id=f"c{n}",
            metadata={"document_id": f"file-{store}", "store": store},
            chunk_metadata=ChunkMetadata(chunk_id=f"c{n}", document_id=f"file-{store}"),
            embedding=unit(rng),
            embedding_model="bench",
            embedding_dimension=DIMENSION,
        )
        for n in range(CHUNKS_PER_STORE)
    ]


async def run_mode(server, mode: str, stores: int, searches: int) -> dict:
    config = RemoteMilvusConfig(uri=server.uri, token=server.token, persistence=PERSISTENCE, collection_mode=mode)
    backend = open_remote_backend(config)
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    indexes = []
    for store in range(stores):
        index = MilvusIndex(backend, f"vs_{mode}_{store}", DIMENSION, config)
        await index.create()
        await index.add_chunks(chunks_for(store, rng))
        indexes.append(index)
    ingest_s = time.perf_counter() - started
    picks = random.Random(11).choices(range(stores), k=searches)
    latencies, crossed = [], 0
    for store in picks:
        query = np.array(unit(rng))
        began = time.perf_counter()
        found = await indexes[store].query_vector(query, 10, 0.0)
        latencies.append((time.perf_counter() - began) * 1000)
        crossed += sum(chunk.metadata["store"] != store for chunk in found.chunks)
        assert len(found.chunks) == CHUNKS_PER_STORE
    collections = len(await backend.run("list collections", backend.client.list_collections))
    backend.close()
    latencies.sort()
    return {
        "mode": mode,
        "stores": stores,
        "collections": collections,
        "create_and_insert_s": round(ingest_s, 1),
        "search_p50_ms": round(statistics.median(latencies), 2),
        "search_p95_ms": round(latencies[int(0.95 * len(latencies)) - 1], 2),
        "results_from_other_stores": crossed,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--kind", choices=["lite", "standalone"], default="lite")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    parser.add_argument("--modes", nargs="+", choices=["per_store", "shared"], default=["per_store", "shared"])
    args = parser.parse_args()
    rows = []
    for mode in args.modes:
        # A fresh server per mode, so neither run pays for the other's collections.
        with tempfile.TemporaryDirectory() as data:
            server = start_server(args.kind, Path(data))
            try:
                rows.append(await run_mode(server, mode, args.stores, args.searches))
            finally:
                stop_server(server)
    print(f"Milvus {args.kind} server, {args.stores} stores x {CHUNKS_PER_STORE} chunks, {args.searches} searches")
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    if len(rows) == 2:
        baseline, shared = rows
        print(
            f"shared / per_store: search p50 x{shared['search_p50_ms'] / baseline['search_p50_ms']:.2f}, "
            f"create+insert x{shared['create_and_insert_s'] / baseline['create_and_insert_s']:.2f}, "
            f"collections {shared['collections']} vs {baseline['collections']}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
