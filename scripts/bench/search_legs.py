"""Where a search's time goes on the embedded default (Milvus Lite 3.x), in-process (no HTTP): our MilvusIndex on
pyfaq (9,280 passages with their cached all-MiniLM-L6-v2 vectors, the Python-FAQ questions), part by part, with
Milvus Lite's own code and with ours (vector_io/lite_bm25.py, lite_live_rows.py, lite_meta_filters.py: its BM25
scorer, its search paths and its attribute filters replaced), alternating per question in one run.

    flock /work/wt/_brief/bench.lock .venv/bin/python scripts/bench/search_legs.py [--copies 11] [--queries 40]

--copies N loads the corpus N times (ids made unique; the copies after the first get random vectors): the keyword
leg then scores N times the postings, as in a store N times larger (the vector figures are not those of real
vectors there). HTTP and the stack's routing come on top (search.py measures them served).
"""

import argparse
import asyncio
import importlib.metadata
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import _common as common
import numpy as np
from llama_stack_api import ChunkMetadata, EmbeddedChunk

from llama_stack_milvus.vector_io.backend import open_lite_backend
from llama_stack_milvus.vector_io.config import InlineMilvusConfig
from llama_stack_milvus.vector_io.fusion import weighted_fusion
from llama_stack_milvus.vector_io.index import MilvusIndex
from llama_stack_milvus.vector_io.search_options import SEARCH_OPTIONS, SearchOptions

PERSISTENCE = {"namespace": "vector_io::milvus", "backend": "kv_default"}
TOP_K = 10
DEPTH = 50  # what a hybrid search fetches per leg: max_num_results 10 x the stack's chunk_multiplier 5
HYBRID = "hybrid search (top 10, legs 50 deep)"  # as vector_stores.search runs it: the legs' ids, then 10 rows


def copies_of(beir: common.BeirSet, vectors: np.ndarray, copies: int) -> Iterator[list[EmbeddedChunk]]:
    """The corpus `copies` times, one copy at a time (100k chunks of Python float lists do not fit at once)."""
    rng = np.random.default_rng(0)
    for copy in range(copies):
        if copy:
            vectors = rng.standard_normal(vectors.shape).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield [
            EmbeddedChunk(
                content=f"{doc['title']} {doc['text']}",
                chunk_id=f"{doc_id}~{copy}",
                metadata={"document_id": doc_id},
                chunk_metadata=ChunkMetadata(chunk_id=f"{doc_id}~{copy}", document_id=doc_id),
                embedding=vector.tolist(),
                embedding_model="all-MiniLM-L6-v2",
                embedding_dimension=len(vector),
            )
            for (doc_id, doc), vector in zip(beir.corpus.items(), vectors, strict=True)
        ]


async def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    SEARCH_OPTIONS.set(SearchOptions(hybrid_depth=DEPTH))  # what our vector_stores.search asks of a hybrid search
    data = next(
        f
        for f in (common.ROOT.parent / "shared" / "data" / "pyfaq", common.cache_root() / "data" / "pyfaq")
        if (f / "corpus.jsonl").exists()
    )
    beir = common.load_beir(data)
    corpus_vectors = common.cached_embeddings(
        f"corpus-{common.file_digest(data / 'corpus.jsonl')}-title+text",
        [f"{d['title']} {d['text']}" for d in beir.corpus.values()],
        "corpus",
    )
    texts = list(beir.queries.values())[: args.queries]
    common.embed(texts[:1])  # loads the model before anything is timed
    with tempfile.TemporaryDirectory(prefix="search-legs-") as tmp:
        # The first keyword search builds each segment's BM25 index: a minute at 100k chunks on a loaded machine.
        config = InlineMilvusConfig(db_path=str(Path(tmp) / "legs.db"), persistence=PERSISTENCE, request_timeout_s=600)
        backend = open_lite_backend(config)
        index = MilvusIndex(backend, "vs_legs", corpus_vectors.shape[1], config)
        await index.create()
        started = time.perf_counter()
        for rows in copies_of(beir, corpus_vectors, args.copies):
            await index.add_chunks(rows)
        print(f"{9280 * args.copies} chunks in {time.perf_counter() - started:.0f} s", file=sys.stderr)

        swaps = replacements()
        parts: dict[str, dict[str, list[float]]] = {name: {} for name in CODE}
        same = 0

        for n, text in enumerate(texts):
            keyword_ids = []
            for code in CODE:
                for owner, name, ours in swaps:
                    setattr(owner, name, ours if code == "ours" else ours.original)
                times = parts[code]

                async def timed(name: str, call, times=times) -> object:
                    began = time.perf_counter()
                    out = await call
                    times.setdefault(name, []).append(1000 * (time.perf_counter() - began))
                    return out

                vector = await timed("query embedding (torch)", asyncio.to_thread(common.embed, [text]))
                vector = vector[0]
                await timed("vector search k=10", index.query_vector(vector, TOP_K, None))
                found = await timed("keyword search k=10", index.query_keyword(text, TOP_K, None))
                keyword_ids.append([chunk.chunk_id for chunk in found.chunks])
                await timed(
                    HYBRID,
                    index.query_hybrid(vector, text, TOP_K, None, "weighted", {"alpha": 0.95}),
                )
                vector_leg = index._vector_hits(vector, DEPTH, None, slim=True)
                vector_hits, _ = await timed("  vector leg, depth 50 (ids)", vector_leg)
                keyword_leg = index._keyword_hits(text, DEPTH, None, slim=True)
                keyword_hits, _ = await timed("  keyword leg, depth 50 (ids)", keyword_leg)
                await timed("  fusion", asyncio.to_thread(weighted_fusion, vector_hits, keyword_hits, 0.95))
                await timed(
                    "  embedding and keyword leg at once",
                    asyncio.gather(
                        asyncio.to_thread(common.embed, [text]), index._keyword_hits(text, DEPTH, None, slim=True)
                    ),
                )
            same += keyword_ids[0] == keyword_ids[1]
            if n == 0:
                parts = {name: {} for name in CODE}  # warm-up
                same = 0
        for owner, name, ours in swaps:
            setattr(owner, name, ours)
        backend.close()
    print(f"keyword results identical (ids, order) for {same} of {len(texts) - 1} questions", file=sys.stderr)
    return {code: {name: statistics.median(v) for name, v in times.items()} for code, times in parts.items()}


CODE = ("Lite's own code", "ours")


def replacements() -> list[tuple[object, str, object]]:
    """(owner, name, ours) for each part of Milvus Lite that open_lite_backend replaced; ours keeps Lite's as .original:
    its BM25 scorer, dense and sparse search paths and attribute-column builder."""
    from milvus_lite.engine import collection
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex
    from milvus_lite.search.filter.eval import hybrid_backend

    parts = (
        (SparseInvertedIndex, "search"),
        (collection, "execute_search_with_index"),
        (collection.Collection, "_search_sparse"),
        (hybrid_backend, "_augment_table"),
    )
    return [(owner, name, getattr(owner, name)) for owner, name in parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1, help="load the corpus this many times (default 1)")
    parser.add_argument("--queries", type=int, default=40, help="questions timed (default 40, after one warm-up)")
    args = parser.parse_args()
    p50 = asyncio.run(measure(args))
    lite, ours = p50.values()
    print(f"milvus-lite {importlib.metadata.version('milvus-lite')}, {9280 * args.copies} chunks, p50 ms in-process")
    print("| part | Lite's own code | ours | ours / Lite's |\n|---|---:|---:|---:|")
    for name in lite:
        print(f"| {name} | {lite[name]:.1f} | {ours[name]:.1f} | {ours[name] / lite[name]:.2f} |")
    for label, row in p50.items():
        served_vector = row["query embedding (torch)"] + row["vector search k=10"]
        print(
            f"{label}: (embedding + hybrid) / (embedding + vector) "
            f"{(row['query embedding (torch)'] + row[HYBRID]) / served_vector:.2f}, "
            f"keyword / (embedding + vector) {row['keyword search k=10'] / served_vector:.2f}"
        )


if __name__ == "__main__":
    main()
