"""Search latency: p50/p95 of `vector_stores.search` over HTTP at 10k and 100k chunks, ours against every built-in
vector_io provider a stack can run in-process (inline::milvus, inline::faiss, inline::sqlite-vec) and raw pymilvus
(+ the query embedding), in vector, keyword and hybrid modes, with and without a filter.

Chunks are real documentation (six Debian packages, see _docs.py) with embeddings computed once and cached
(100k chunks take about an hour on 2 cores; `--embeddings FILE.npy` loads vectors made elsewhere). They are loaded
through `vector_io.insert` with their embeddings, and timed once the process holding them has gone idle (Milvus
builds indexes in the background after a large insert), each query asked in every mode before the next query (so a
change in a shared machine's load slows every mode alike). Every store embeds queries with sentence-transformers'
all-MiniLM-L6-v2 (the model of the cached vectors) inside the server, raw pymilvus does the same in-process and
talks to its own Milvus Lite file with our index settings (HNSW M=16, efConstruction=200, ef=256, BM25).
The built-in providers run the same distribution without our `module:`, vector_io swapped for each. sqlite-vec
loads an SQLite extension: where this Python's sqlite3 cannot, pysqlite3-binary stands in for it in that server
(see pysqlite3_shim/), and without that package (or sqlite-vec's) its row says why it was skipped.
Queries: the Python FAQ questions of a BEIR folder (--queries), else the openings of held-out chunks.

    .venv/bin/python scripts/bench/search.py                # 10k and 100k
    .venv/bin/python scripts/bench/search.py --sizes 10000  # quicker
"""

import argparse
import contextlib
import json
import logging
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common as common
import _docs
import numpy as np

RESULTS = common.ROOT / "scripts" / "bench" / "results"
DEFAULT_QUERIES = common.ROOT.parent / "shared" / "data" / "pyfaq" / "queries.jsonl"
MODES = ("vector", "keyword", "hybrid")
FILTER = {"type": "eq", "key": "package", "value": "python3.11-doc"}
TOP_K = 10
INSERT_BATCH = 1000
SYSTEMS = ("builtin", "faiss", "sqlite-vec", "ours", "raw pymilvus")
BASELINES = tuple(system for system in SYSTEMS if system != "ours")
HEADERS = {"builtin": "built-in milvus", "raw pymilvus": "raw pymilvus + embedding"}
# Built-in vector_io providers other than milvus, as a distribution declares them (their config classes:
# llama_stack/providers/inline/vector_io/*/config.py); LLAMA_STACK_MILVUS_DIR is the server's data folder.
BUILTIN_VECTOR_IO = {
    "faiss": {
        "provider_id": "faiss",
        "provider_type": "inline::faiss",
        "config": {"persistence": {"namespace": "vector_io::faiss", "backend": "kv_default"}},
    },
    "sqlite-vec": {
        "provider_id": "sqlite-vec",
        "provider_type": "inline::sqlite-vec",
        "config": {
            "db_path": "${env.LLAMA_STACK_MILVUS_DIR}/sqlite_vec.db",
            "persistence": {"namespace": "vector_io::sqlite_vec", "backend": "kv_default"},
        },
    },
}
PYSQLITE3_SHIM = Path(__file__).resolve().parent / "pysqlite3_shim"
MIN_QUERIES = 10


class Skipped(Exception):
    """A system that cannot run on this machine; its message says why."""


def sqlite_vec_env() -> tuple[dict[str, str], str]:
    """The server environment inline::sqlite-vec needs here and a note on it, or Skipped. The provider loads the
    extension into the stdlib sqlite3 at each store's creation: on a Python built without loadable extensions
    (pyenv's, for one) stock Llama Stack starts, then fails every `vector_stores.create` with a 500
    (AttributeError: 'sqlite3.Connection' object has no attribute 'enable_load_extension'; without the sqlite-vec
    package: No module named 'sqlite_vec')."""
    try:
        import sqlite_vec  # noqa: F401 - only whether the server will find it
    except ImportError as error:
        raise Skipped(f"the sqlite-vec package is not installed ({error})") from None
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return {}, ""
    try:
        import pysqlite3  # noqa: F401
    except ImportError:
        raise Skipped(
            "this Python's sqlite3 cannot load extensions (built without --enable-loadable-sqlite-extensions) "
            "and pysqlite3-binary, which could stand in for it, is not installed"
        ) from None
    path = os.pathsep.join(filter(None, [str(PYSQLITE3_SHIM), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}, "sqlite3 = pysqlite3-binary: this Python's sqlite3 cannot load extensions"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def summary(latencies: list[float], hits: list[int], errors: list[str]) -> dict:
    entry: dict = {"queries": len(latencies) + len(errors)}
    if latencies:
        ms = [1000 * s for s in latencies]
        entry.update(
            p50_ms=round(percentile(ms, 50), 1),
            p95_ms=round(percentile(ms, 95), 1),
            mean_hits=round(statistics.mean(hits), 1),
            answered=sum(1 for found in hits if found),  # queries with at least one result
        )
    if errors:
        entry["errors"] = f"{len(errors)} failed: {errors[0][:300]}"
    if latencies and not any(hits):
        entry["errors"] = (entry.get("errors", "") + " every query answered with NO results").strip()
    return entry


def timed(
    queries: list[str],
    searches: dict[str, Callable[[str], int]],
    budget_s: float,
    server: common.StackServer | None = None,
) -> dict[str, dict]:
    """Each query in every mode before the next query, the order of the modes rotating from one query to the next:
    these machines are shared, and a change in their load during a run then slows every mode alike instead of the
    modes timed in its minutes (on one server, timing the modes one after the other gave hybrid / vector 1.51 and
    then 1.18). Runs until all queries are done or `budget_s` per mode is spent (at least MIN_QUERIES): the
    built-in provider takes seconds per filtered query at 100k chunks. `server`: its log is read for the error
    behind a mode's empty answers."""
    names = list(searches)
    for search in searches.values():
        with contextlib.suppress(Exception):  # warm-up, not timed: a failing mode fails again below, where it counts
            search(queries[0])
    latencies: dict[str, list[float]] = {name: [] for name in names}
    hits: dict[str, list[int]] = {name: [] for name in names}
    errors: dict[str, list[str]] = {name: [] for name in names}
    logged: dict[str, str] = {}
    began = time.perf_counter()
    for n, query in enumerate(queries):
        if n >= MIN_QUERIES and time.perf_counter() - began > budget_s * len(names):
            break
        for name in names[n % len(names) :] + names[: n % len(names)]:
            offset = server.log_size() if server else 0
            started = time.perf_counter()
            try:
                found = searches[name](query)
            except Exception as error:  # noqa: BLE001 - a failing mode is a result
                errors[name].append(f"{type(error).__name__}: {getattr(error, 'body', None) or error}")
                continue
            latencies[name].append(time.perf_counter() - started)
            hits[name].append(found)
            if server and not found and name not in logged and (error := logged_error(server.log_since(offset))):
                logged[name] = error
    results = {name: summary(latencies[name], hits[name], errors[name]) for name in names}
    for name, error in logged.items():
        results[name]["logged"] = error
    return results


def logged_error(log: str) -> str | None:
    """The first error the stack logged while answering searches with an empty 200: its vector-store mixin logs
    the provider's exception and returns no results. The console log wraps lines, hence the whitespace folding."""
    flat = " ".join(log.split())
    match = re.search(
        r"Error searching vector store category=\S+ error=(.+?)(?= \w+=\S| (?:DEBUG|INFO|WARNING|ERROR) \d{4}-|$)", flat
    )
    return match[1][:200] if match else None


def attributes(chunk: dict) -> dict:
    return {"document_id": chunk["source"], "package": chunk["package"]}


def run_stack(
    label: str,
    run_yaml: Path,
    chunks: list[dict],
    vectors: np.ndarray,
    queries: list[str],
    budget_s: float,
    env: dict[str, str] | None = None,
) -> dict:
    from llama_stack_client import LlamaStackClient

    result: dict = {}
    with tempfile.TemporaryDirectory(prefix=f"search-{label}-") as tmp:
        with common.stack_server(run_yaml, Path(tmp), env) as server:
            client = LlamaStackClient(base_url=server.base_url, timeout=600, max_retries=0)
            store = client.vector_stores.create(name=f"search-{label}")
            started = time.perf_counter()
            rows = [
                {"id": c["id"], "text": c["text"], "document_id": c["source"], "attributes": attributes(c)}
                for c in chunks
            ]
            common.insert_chunks(client, store.id, rows, vectors, "torch", INSERT_BATCH)
            result["insert_s"] = round(time.perf_counter() - started, 1)
            result["settle_s"] = common.wait_until_idle(server.process.pid)
            print(
                f"[{label}] inserted {len(chunks)} chunks in {result['insert_s']} s, idle after {result['settle_s']} s",
                file=sys.stderr,
            )
            searches = {}
            for mode in MODES:
                for filtered in (False, True):
                    extra = {"filters": FILTER} if filtered else {}

                    def search(query: str, mode=mode, extra=extra) -> int:
                        page = client.vector_stores.search(
                            vector_store_id=store.id, query=query, search_mode=mode, max_num_results=TOP_K, **extra
                        )
                        return len(page.data)

                    searches[f"{mode}{' + filter' if filtered else ''}"] = search
            result.update(timed(queries, searches, budget_s, server))
            for name in searches:
                print(f"[{label}] {name:18} {result[name]}", file=sys.stderr)
    return result


def run_raw(chunks: list[dict], vectors: np.ndarray, queries: list[str], budget_s: float) -> dict:
    """pymilvus straight on a Milvus Lite file, our schema and index settings, the query embedded in-process."""
    from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, MilvusClient, RRFRanker

    from llama_stack_milvus.vector_io.schema import DYNAMIC_LAYOUT  # attributes laid out as ours are

    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="search-raw-") as tmp:
        client = MilvusClient(str(Path(tmp) / "raw.db"))
        schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("content", DataType.VARCHAR, max_length=65535, enable_analyzer=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=common.EMBEDDING_DIMENSION)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["content"],
                output_field_names=["sparse"],
            )
        )
        index = client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200})
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection("chunks", schema=schema, index_params=index, consistency_level="Strong")
        started = time.perf_counter()
        for start in range(0, len(chunks), INSERT_BATCH):
            client.insert(
                "chunks",
                [
                    {
                        "id": c["id"],
                        "content": c["text"],
                        "vector": vectors[i].tolist(),
                        **DYNAMIC_LAYOUT.columns(attributes(c)),
                    }
                    for i, c in enumerate(chunks[start : start + INSERT_BATCH], start=start)
                ],
            )
        client.flush("chunks")
        result["insert_s"] = round(time.perf_counter() - started, 1)
        result["settle_s"] = common.wait_until_idle(os.getpid())
        print(
            f"[raw pymilvus] inserted {len(chunks)} chunks in {result['insert_s']} s, "
            f"idle after {result['settle_s']} s",
            file=sys.stderr,
        )
        dense = {"metric_type": "COSINE", "params": {"ef": 256}}
        fields = ["content", "$meta"]
        expression = f'{DYNAMIC_LAYOUT.path(FILTER["key"])} == "{FILTER["value"]}"'
        searches = {}
        for mode in MODES:
            for filtered in (False, True):
                where = expression if filtered else ""

                def search(query: str, mode=mode, where=where) -> int:
                    if mode == "keyword":
                        found = client.search(
                            "chunks", [query], anns_field="sparse", limit=TOP_K, filter=where, output_fields=fields
                        )
                        return len(found[0])
                    vector = common.embed([query])[0].tolist()
                    if mode == "vector":
                        found = client.search(
                            "chunks",
                            [vector],
                            anns_field="vector",
                            limit=TOP_K,
                            filter=where,
                            search_params=dense,
                            output_fields=fields,
                        )
                        return len(found[0])
                    requests = [
                        AnnSearchRequest([vector], "vector", dense, limit=TOP_K, expr=where or None),
                        AnnSearchRequest([query], "sparse", {"metric_type": "BM25"}, limit=TOP_K, expr=where or None),
                    ]
                    found = client.hybrid_search("chunks", requests, RRFRanker(60), limit=TOP_K, output_fields=fields)
                    return len(found[0])

                searches[f"{mode}{' + filter' if filtered else ''}"] = search
        result.update(timed(queries, searches, budget_s))
        for name in searches:
            print(f"[raw pymilvus] {name:18} {result[name]}", file=sys.stderr)
        client.close()
    return result


def chunk_vectors(stem: str, texts: list[str], cache: Path) -> np.ndarray:
    """Cached vectors of the first len(texts) chunks: a cache made for more chunks serves a smaller run."""
    for path in cache.glob(f"{stem}-*.npy"):
        match = re.fullmatch(rf"{re.escape(stem)}-(\d+)", path.stem)
        if match and int(match[1]) >= len(texts):
            print(f"chunks: {len(texts)} embeddings from {path}", file=sys.stderr)
            return np.load(path, mmap_mode="r")[: len(texts)]
    return common.cached_embeddings(f"{stem}-{len(texts)}", texts, "chunks", cache)


def load_queries(path: Path | None, held_out: list[dict], count: int) -> tuple[list[str], str]:
    if path and path.exists():
        texts = [json.loads(line)["text"] for line in path.open()]
        return texts[:count], str(path)
    return [" ".join(c["text"].split()[:12]) for c in held_out[:count]], "openings of held-out chunks"


def answered(entry: dict) -> int:
    """How many of a mode's timed queries found something (in JSON from before that count: all or none)."""
    return entry.get("answered", entry["queries"] if entry.get("mean_hits") else 0)


def modes_of(system: dict) -> list[str]:
    """The timed modes of a system's results, without its insert and settle seconds."""
    return [name for name, entry in system.items() if isinstance(entry, dict)]


def table(results: dict) -> str:
    lines = []
    for size, systems in results["sizes"].items():
        lines += [
            f"\n{size} chunks: p50 / p95 ms (ratios of p50: ours / each other system that found results)",
            "| mode | "
            + " | ".join(HEADERS.get(s, s) for s in SYSTEMS)
            + " | "
            + " | ".join(f"ours/{s}" for s in BASELINES)
            + " |",
            "|---|" + "---:|" * (len(SYSTEMS) + len(BASELINES)),
        ]
        names = modes_of(systems.get("ours", {}))
        failures: dict[tuple[str, str], list[str]] = {}  # (system, what went wrong) -> modes
        for name in names:
            cells, p50 = [], {}
            for system in SYSTEMS:
                entry = systems.get(system, {}).get(name, {})
                wrong = "; ".join(
                    filter(None, [entry.get("errors"), entry.get("logged") and f"the server logged: {entry['logged']}"])
                )
                if wrong:
                    failures.setdefault((system, wrong), []).append(name)
                if "p50_ms" in entry:
                    cell = f"{entry['p50_ms']} / {entry['p95_ms']}"
                    if (found := answered(entry)) < entry["queries"]:
                        # Times that are partly those of failures: no ratio.
                        cells.append(
                            cell + (f" (results for {found} of {entry['queries']})" if found else " (no results)")
                        )
                        continue
                    p50[system] = entry["p50_ms"]
                    cells.append(cell + (" (errors)" if "errors" in entry else ""))
                else:
                    whole = systems.get(system, {})
                    cells.append(entry.get("errors", whole.get("error", whole.get("skipped", "-")))[:60])
            ratios = [
                f"{p50['ours'] / p50[other]:.2f}" if "ours" in p50 and other in p50 else "-" for other in BASELINES
            ]
            lines.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
        inserts = {s: systems.get(s, {}).get("insert_s") for s in SYSTEMS}
        lines.append("insert seconds: " + ", ".join(f"{s} {v}" for s, v in inserts.items() if v is not None))
        for (system, error), modes in failures.items():
            lines.append(f"{system} ({', '.join(modes)}): {error}")
        for system in SYSTEMS:
            for key in ("note", "skipped", "error"):
                if key in systems.get(system, {}):
                    lines.append(f"{system}: {key}: {systems[system][key]}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(results["sizes"])
    fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 3.8), squeeze=False)
    colours = {
        "builtin": "#d62728",
        "faiss": "#ff7f0e",
        "sqlite-vec": "#2ca02c",
        "ours": "#1f77b4",
        "raw pymilvus": "#999999",
    }
    for ax, size in zip(axes[0], sizes, strict=True):
        systems = results["sizes"][size]
        names = modes_of(systems.get("ours", {}))
        width = 0.8 / len(SYSTEMS)
        for offset, system in enumerate(SYSTEMS):
            entries = [systems.get(system, {}).get(name, {}) for name in names]
            values = [entry.get("p50_ms", 0) for entry in entries]
            position = np.arange(len(names)) + (offset - (len(SYSTEMS) - 1) / 2) * width
            bars = ax.bar(position, values, width, label=HEADERS.get(system, system), color=colours[system])
            for bar, entry in zip(bars, entries, strict=True):
                if "p50_ms" in entry and answered(entry) < entry["queries"]:
                    bar.set(alpha=0.35, hatch="///")  # the time of failed searches, not of answers
        ax.set_xticks(np.arange(len(names)), [n.replace(" + ", "\n+ ") for n in names], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("p50 ms (log scale, lower is better)")
        ax.set_title(f"{size} chunks (hatched: no or partial results)", fontsize=9)
    axes[0][0].figure.legend(
        *axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=len(SYSTEMS), fontsize=7, frameon=False
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated store sizes (default 10000,100000)")
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES, help="a BEIR queries.jsonl")
    parser.add_argument("--count", type=int, default=100, help="queries per mode at most (default 100)")
    parser.add_argument(
        "--budget", type=float, default=60, help=f"seconds per mode, after at least {MIN_QUERIES} queries (default 60)"
    )
    parser.add_argument("--skip", default="", help=f"comma-separated systems to skip ({', '.join(SYSTEMS)})")
    parser.add_argument("--embeddings", type=Path, help="precomputed vectors (.npy, rows in chunk order)")
    parser.add_argument("--debs", type=Path, help="a folder holding the six .deb files (default: apt-get download)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sizes = [int(size) for size in args.sizes.split(",")]
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    if unknown := skip - set(SYSTEMS):
        parser.error(f"--skip: no system named {', '.join(sorted(unknown))} (systems: {', '.join(SYSTEMS)})")
    began = time.perf_counter()
    cache = common.cache_root()
    largest = max(sizes)
    chunks_path = _docs.chunks_file(cache, args.debs)
    pool = _docs.load_chunks(chunks_path, largest + 1000)
    chunks, held_out = pool[:largest], pool[largest:]
    if args.embeddings:
        vectors = np.load(args.embeddings)[:largest]
    else:
        vectors = chunk_vectors(chunks_path.stem, [c["text"] for c in chunks], cache)
    queries, query_source = load_queries(args.queries, held_out, args.count)
    results: dict = {
        "chunks": {
            "source": "Debian: " + ", ".join(_docs.PACKAGES),
            "tokens": f"{_docs.CHUNK_TOKENS}/{_docs.OVERLAP_TOKENS}",
        },
        "queries": {"count": len(queries), "source": query_source},
        "filter": FILTER,
        "top_k": TOP_K,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="search-yaml-") as tmp:
        run_yamls = {
            "builtin": common.run_yaml_without_module(Path(tmp) / "builtin.yaml"),
            "ours": common.run_yaml_with_settings(Path(tmp) / "ours.yaml", embedder="torch"),
        }
        for system, provider in BUILTIN_VECTOR_IO.items():
            run_yamls[system] = common.run_yaml_without_module(Path(tmp) / f"{system}.yaml", vector_io=provider)
        for size in sizes:
            systems: dict = {}
            for system in SYSTEMS:
                if system in skip:
                    continue
                try:
                    if system == "raw pymilvus":
                        systems[system] = run_raw(chunks[:size], vectors[:size], queries, args.budget)
                    else:
                        env, note = sqlite_vec_env() if system == "sqlite-vec" else ({}, "")
                        systems[system] = run_stack(
                            system, run_yamls[system], chunks[:size], vectors[:size], queries, args.budget, env
                        )
                        if note:
                            systems[system]["note"] = note
                except Skipped as reason:
                    systems[system] = {"skipped": str(reason)}
                    print(f"{system}: skipped: {reason}", file=sys.stderr)
                except Exception as error:  # noqa: BLE001 - one system failing is a result, the others go on
                    systems[system] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                    print(f"[{system}] FAILED at {size}: {error}", file=sys.stderr)
                results["sizes"][str(size)] = systems
                # Written after every system: a long run stopped half-way keeps what it measured.
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "search.json").write_text(json.dumps(results, indent=2) + "\n")
    results["total_s"] = round(time.perf_counter() - began, 1)
    common.save_results(results, args.out, "search", plot, table)


if __name__ == "__main__":
    main()
