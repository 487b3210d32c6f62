"""What the scale-out path costs and gives: attach and search throughput and p50/p95 through HAProxy with 1, 2 and 3
replicas of the milvus-cluster distribution (Postgres, a Milvus Lite server), against the single-process
milvus-embedded distribution (Milvus Lite in-process, SQLite) measured in the same run.

Each system gets the same work from CLIENTS concurrent HTTP clients: first `--files` python3.11-doc pages uploaded and
attached (one request pair per file; attach answers when the file is chunked, embedded and in Milvus), then searches
(hybrid mode, Python FAQ questions) for `--search-seconds`. The cluster keeps one store: its replicas join one at a
time (1, then 2, then 3), so each cluster phase adds its files to the store the previous phases filled; the file
count is checked after each phase. On a 2-core machine no speed-up is expected: the figures show the cost of the
cluster path (HAProxy hop, Postgres metadata, a Milvus server over gRPC) honestly.

    .venv/bin/python scripts/bench/cluster.py                                   # 4 clients, 24 files, 30 s
    .venv/bin/python scripts/bench/cluster.py --files 8 --search-seconds 10     # quicker
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as common
import httpx
import ingest
import numpy as np

from llama_stack_milvus_devtools.cluster import Cluster

RESULTS = common.ROOT / "scripts" / "bench" / "results"
FAQ_QUERIES = common.ROOT.parent / "shared" / "data" / "pyfaq" / "queries.jsonl"
BASELINE = "embedded (1 process)"
REPLICAS = 3


def load_queries(files: list[Path]) -> list[str]:
    if FAQ_QUERIES.exists():
        return [json.loads(line)["text"] for line in FAQ_QUERIES.read_text().splitlines() if line.strip()]
    return [" ".join(path.read_text(errors="replace").split()[:12]) for path in files]


def summary(latencies: list[float], seconds: float, errors: list[str], unit: str) -> dict:
    entry: dict = {"count": len(latencies), "seconds": round(seconds, 1)}
    if latencies:
        ms = [1000 * s for s in latencies]
        entry.update(
            {f"{unit}_per_s": round(len(latencies) / seconds, 2)},
            p50_ms=round(float(np.percentile(ms, 50)), 1),
            p95_ms=round(float(np.percentile(ms, 95)), 1),
        )
    if errors:
        entry["errors"] = f"{len(errors)} failed, first: {errors[0][:300]}"
    return entry


def attach_phase(url: str, store_id: str, files: list[Path], clients: int) -> dict:
    """Upload + attach every file, ``clients`` at a time; latency of the pair per file."""
    latencies, errors, lock = [], [], threading.Lock()

    def one(path: Path) -> None:
        started = time.perf_counter()
        try:
            with httpx.Client(base_url=url, timeout=600) as http:
                upload = http.post(
                    "/v1/files", files={"file": (path.name, path.read_bytes())}, data={"purpose": "assistants"}
                )
                upload.raise_for_status()
                attach = http.post(f"/v1/vector_stores/{store_id}/files", json={"file_id": upload.json()["id"]})
                attach.raise_for_status()
                if attach.json()["status"] != "completed":
                    raise RuntimeError(f"attach of {path.name}: {attach.json()}")
        except (httpx.HTTPError, RuntimeError) as error:
            text = error.response.text[:200] if isinstance(error, httpx.HTTPStatusError) else ""
            with lock:
                errors.append(f"{error!r} {text}")
            return
        with lock:
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, files))
    return summary(latencies, time.perf_counter() - began, errors, "files")


def search_phase(url: str, store_id: str, queries: list[str], clients: int, seconds: float) -> dict:
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop(seed: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            n = seed
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                body = {"query": queries[n % len(queries)], "search_mode": "hybrid", "max_num_results": 10}
                response = http.post(f"/v1/vector_stores/{store_id}/search", json=body)
                with lock:
                    if response.status_code == 200 and response.json()["data"]:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors.append(f"{response.status_code} {response.text[:200]}")
                n += clients

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    return summary(latencies, time.perf_counter() - began, errors, "queries")


def new_store(url: str, name: str) -> str:
    response = httpx.post(f"{url}/v1/vector_stores", json={"name": name}, timeout=60)
    response.raise_for_status()
    return response.json()["id"]


def completed_files(url: str, store_id: str) -> int:
    return httpx.get(f"{url}/v1/vector_stores/{store_id}", timeout=60).json()["file_counts"]["completed"]


def warm_up(url: str) -> None:
    """One upload first: Llama Stack 0.7.3's files provider creates its table on first use, and concurrent first
    uploads to a fresh server fail with 500 "no such table: openai_files"."""
    response = httpx.post(
        f"{url}/v1/files", files={"file": ("warm-up.txt", b"warm up")}, data={"purpose": "assistants"}, timeout=60
    )
    response.raise_for_status()


def measure(url: str, store_id: str, files: list[Path], queries: list[str], args: argparse.Namespace) -> dict:
    warm_up(url)
    before = completed_files(url, store_id)
    entry = {
        "attach": attach_phase(url, store_id, files, args.clients),
        "search": search_phase(url, store_id, queries, args.clients, args.search_seconds),
    }
    expected = before + entry["attach"]["count"]
    if (found := completed_files(url, store_id)) != expected:
        entry["lost"] = f"the store lists {found} completed files, {expected} were attached"
    return entry


def run_all(files: list[Path], queries: list[str], args: argparse.Namespace, work: Path) -> dict:
    runs: dict = {}
    phases = [files[i :: REPLICAS + 1] for i in range(REPLICAS + 1)]  # distinct files for each system
    with common.stack_server(common.RUN_YAML, work / "embedded") as server:
        runs[BASELINE] = measure(server.base_url, new_store(server.base_url, "bench"), phases[0], queries, args)
    print(f"[{BASELINE}] {runs[BASELINE]}", file=sys.stderr)
    cluster = Cluster(work / "cluster", replicas=REPLICAS, port=0, chat=False)
    cluster.start()
    try:
        for index in range(1, REPLICAS):
            cluster.stop_replica(index)
        store_id = new_store(cluster.url, "bench")
        for count in range(1, REPLICAS + 1):
            if count > 1:
                cluster.start_replica(count - 1)
            name = f"cluster, {count} replica{'s' if count > 1 else ''}"
            runs[name] = measure(cluster.url, store_id, phases[count], queries, args)
            print(f"[{name}] {runs[name]}", file=sys.stderr)
    finally:
        cluster.stop(purge=True)
    return runs


def table(results: dict) -> str:
    runs = results["runs"]
    base = runs[BASELINE]
    lines = [
        f"{results['clients']} clients; attach: {results['files']} python3.11-doc pages in all (a quarter per system); "
        f"search: hybrid, {results['search_seconds']} s per system",
        "| system | attach files/s | x embedded | attach p50/p95 ms | search q/s | x embedded | search p50/p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in runs.items():
        cells = []
        for phase, unit in (("attach", "files_per_s"), ("search", "queries_per_s")):
            row = entry[phase]
            rate = row.get(unit)
            ratio = f"{rate / base[phase][unit]:.2f}" if rate and base[phase].get(unit) else "-"
            cells += [str(rate or "-"), ratio, f"{row.get('p50_ms', '-')} / {row.get('p95_ms', '-')}"]
        notes = "; ".join(entry[phase]["errors"] for phase in ("attach", "search") if "errors" in entry[phase])
        notes = "; ".join(filter(None, [notes, entry.get("lost", "")]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |" + (f" {notes}" if notes else ""))
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, (phase, unit, label) in zip(
        axes,
        [("attach", "files_per_s", "attached files per second"), ("search", "queries_per_s", "searches per second")],
        strict=True,
    ):
        values = [runs[name][phase].get(unit, 0) for name in runs]
        ax.barh(list(runs), values, color=["#999999"] + ["#1f77b4"] * (len(runs) - 1))
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:.1f}", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"{label} (higher is better)")
    fig.suptitle(f"Cluster behind HAProxy vs one process: {results['clients']} clients, 2 cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (default 4)")
    parser.add_argument("--files", type=int, default=24, help="python3.11-doc pages, split over the systems")
    parser.add_argument("--search-seconds", type=float, default=30, help="search time per system (default 30)")
    parser.add_argument("--deb", help="a downloaded python3.11-doc .deb (default: apt-get download it)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Every server inherits it (the embedded one through common.server_env, the replicas through this process).
    os.environ.setdefault("OMP_NUM_THREADS", str(common.THREADS))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as work:
        files = ingest.pick_files(ingest.debian_docs(Path(work), args.deb), args.files)
        queries = load_queries(files)
        runs = run_all(files, queries, args, Path(work))
    results = {
        "clients": args.clients,
        "files": len(files),
        "search_seconds": args.search_seconds,
        "runs": runs,
        "total_s": round(time.perf_counter() - began, 1),
    }
    common.save_results(results, args.out, "cluster", plot, table)


if __name__ == "__main__":
    main()
