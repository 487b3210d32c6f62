"""Ingestion throughput: real documentation files uploaded and attached over HTTP until every file is `completed`.

Measured in one run, on the same chunks (the stack's own chunker, static 160/32 tokens, as the distribution's
default), in chunks per second:
  bound torch / bound onnx  the embedding model alone, in-process, on every chunk (one call, length-sorted batches);
                            onnx: the distribution's default export (int8, smoothed), as `ours` embeds
  builtin                   stock Llama Stack: the built-in milvus provider, sentence-transformers embeddings
  ours (torch)              our provider with the same sentence-transformers embeddings as the built-in
  ours                      the milvus-embedded distribution as shipped (our provider, int8 ONNX embeddings)
Each server run uploads every file (files.create), attaches them in one file batch and polls until the batch is
done; the clock runs from the first upload to the last file completed. Prints a table with the ratios and writes
JSON + PNG to --out.

    .venv/bin/python scripts/bench/ingest.py --files 60
    .venv/bin/python scripts/bench/ingest.py --files 60 --only 'bound onnx,ours'   # the int8 bound and ours alone
    .venv/bin/python scripts/bench/ingest.py --only 'bound onnx,ours' --threads    # + the server's CPU per thread

--threads samples each thread's CPU time of the server (/proc) while the clock runs and names the threads with
`py-spy dump` (pip install py-spy; without it, by tid); CPU of threads too short-lived to be sampled is "ended".
"""

import argparse
import logging
import mimetypes
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import _common as common

RESULTS = common.ROOT / "scripts" / "bench" / "results"
CHUNK_TOKENS, OVERLAP_TOKENS = 160, 32
PACKAGE = "python3.11-doc"
SOURCES_IN_PACKAGE = "usr/share/doc/python3.11/html/_sources"


def debian_docs(work: Path, deb: str | None) -> Path:
    """The reST sources of Debian's python3.11-doc (apt-get download, dpkg -x), as files on disk."""
    if deb is None:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=work, check=True, capture_output=True)
        deb = str(next(work.glob(f"{PACKAGE}_*.deb")))
    subprocess.run(["dpkg", "-x", deb, str(work / "pkg")], check=True)
    return work / "pkg" / SOURCES_IN_PACKAGE


def pick_files(sources: Path, count: int) -> list[Path]:
    """`count` files spread evenly over the sorted list (short FAQ pages and long library references alike)."""
    files = sorted(p for p in sources.rglob("*.txt") if p.stat().st_size > 0)
    if count >= len(files):
        return files
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def stack_chunks(files: list[Path]) -> dict[str, list[str]]:
    """File name -> the chunk texts the stack makes of it, by its own extraction and chunker."""
    from llama_stack.providers.utils.memory.vector_store import content_from_data_and_mime_type, make_overlapped_chunks

    from llama_stack_milvus.offline import ensure_tiktoken_cache

    ensure_tiktoken_cache()  # the chunker's tokenizer, offline (servers get it through common.server_env)

    chunks = {}
    for path in files:
        mime_type, _ = mimetypes.guess_type(path.name)
        content = content_from_data_and_mime_type(path.read_bytes(), mime_type)
        made = make_overlapped_chunks(path.name, content, CHUNK_TOKENS, OVERLAP_TOKENS, {})
        chunks[str(path)] = [str(chunk.content) for chunk in made]
    return chunks


def thread_cpu(pid: int) -> dict[tuple[int, str], float]:
    """(tid, start time) -> CPU seconds of each live thread of a process."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = common.stat_fields(task / "stat")
        except OSError:  # ended meanwhile
            continue
        threads[(int(task.name), fields[19])] = common.stat_cpu_seconds(fields)
    return threads


class ThreadSampler:
    """Each thread's CPU time of a process from start() to stop(), grouped by Python thread name (py-spy dump):
    numbered pool threads ("onnx-encoder_0", "asyncio_3") are summed under one name."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self.first = thread_cpu(self.pid)
        self.last = dict(self.first)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.last.update(thread_cpu(self.pid))

    def stop(self, process_cpu_s: float) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.last.update(thread_cpu(self.pid))
        names = {}
        py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if py_spy:
            dump = subprocess.run([py_spy, "dump", "-p", str(self.pid)], capture_output=True, text=True).stdout
            names = {int(tid): name for tid, name in re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, re.M)}
        groups: Counter[str] = Counter()
        for key, cpu in self.last.items():
            name = names.get(key[0]) or ("native (no Python name)" if names else f"tid {key[0]}")
            groups[re.sub(r"[_-]\d+$", "", re.sub(r"_[0-9a-f]{8}_.*", "", name))] += cpu - self.first.get(key, 0.0)
        groups["ended (threads too short-lived to sample)"] = process_cpu_s - sum(groups.values())
        return {name: round(cpu, 2) for name, cpu in groups.most_common() if cpu >= 0.05}


# The bench's embedder for each bound: "ours" embeds with the distribution's default, the smoothed int8 export.
BOUND_EMBEDDERS = {"bound torch": "torch", "bound onnx": "smooth"}


def bound(texts: list[str], embedder: str) -> dict:
    common.embed(texts[:64], embedder)  # load and warm up, not timed
    started, cpu = time.perf_counter(), time.process_time()
    common.embed(texts, embedder)
    elapsed = time.perf_counter() - started
    return {
        "seconds": round(elapsed, 1),
        "chunks_per_s": round(len(texts) / elapsed, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
    }


def ingest(
    label: str, run_yaml: Path, files: list[Path], chunks: dict[str, list[str]], timeout: float, threads: bool
) -> dict:
    from llama_stack_client import LlamaStackClient

    with tempfile.TemporaryDirectory(prefix=f"ingest-{label}-") as tmp:
        with common.stack_server(run_yaml, Path(tmp)) as server:
            client = LlamaStackClient(base_url=server.base_url, timeout=600, max_retries=0)
            store = client.vector_stores.create(name=f"ingest-{label}")
            # Load the embedding model before the clock starts: the bench measures ingestion, not start-up.
            client.vector_stores.search(vector_store_id=store.id, query="warm-up")
            warm = client.vector_stores.create(name="warm-up")
            first = client.files.create(file=files[0].open("rb"), purpose="assistants")
            client.vector_stores.files.create(vector_store_id=warm.id, file_id=first.id)
            started, cpu = time.perf_counter(), common.cpu_seconds(server.process.pid)
            sampler = ThreadSampler(server.process.pid) if threads else None
            if sampler:
                sampler.start()
            paths = {client.files.create(file=path.open("rb"), purpose="assistants").id: path for path in files}
            file_ids = list(paths)
            uploaded = time.perf_counter() - started
            batch = client.vector_stores.file_batches.create(
                vector_store_id=store.id,
                file_ids=file_ids,
                chunking_strategy={
                    "type": "static",
                    "static": {"max_chunk_size_tokens": CHUNK_TOKENS, "chunk_overlap_tokens": OVERLAP_TOKENS},
                },
            )
            while batch.status == "in_progress":
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"batch still in progress after {timeout} s: {batch.file_counts}")
                time.sleep(0.5)
                batch = client.vector_stores.file_batches.retrieve(batch_id=batch.id, vector_store_id=store.id)
            elapsed = time.perf_counter() - started
            cpu = common.cpu_seconds(server.process.pid) - cpu
            per_thread = sampler.stop(cpu) if sampler else None
            failed = {
                str(paths[f.id].name): f.last_error.message if f.last_error else "?"
                for f in client.vector_stores.files.list(store.id, limit=100, filter="failed")
            }
            ingested = sum(len(chunks[str(path)]) for path in paths.values() if path.name not in failed)
            print(
                f"[{label}] {batch.file_counts.completed}/{len(files)} files completed in {elapsed:.1f} s"
                + (f"; FAILED: {failed}" if failed else ""),
                file=sys.stderr,
            )
    result = {
        "seconds": round(elapsed, 1),
        "upload_s": round(uploaded, 1),
        "chunks_per_s": round(ingested / elapsed, 1),
        "cpu_s": round(cpu, 1),
        "files_completed": batch.file_counts.completed,
    }
    if failed:
        result["failed"] = failed
    if per_thread:
        result["cpu_s_per_thread"] = per_thread
    return result


def table(results: dict) -> str:
    rows = results["runs"]
    lines = [
        f"{results['files']} files, {results['chunks']} chunks ({CHUNK_TOKENS}/{OVERLAP_TOKENS} tokens), "
        f"{results['bytes'] / 1e6:.1f} MB",
        "| run | seconds | CPU s | chunks/s | x bound torch | x bound onnx | x builtin |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in rows.items():
        if "error" in entry:
            lines.append(f"| {name} | error: {entry['error'][:80]} | | | | | |")
            continue
        rate = entry["chunks_per_s"]
        ratios = [
            f"{rate / rows[other]['chunks_per_s']:.2f}" if "chunks_per_s" in rows.get(other, {}) else "-"
            for other in ("bound torch", "bound onnx", "builtin")
        ]
        failed = f" ({len(entry['failed'])} file failed)" if entry.get("failed") else ""
        cpu = entry.get("cpu_s", "-")
        lines.append(f"| {name}{failed} | {entry['seconds']} | {cpu} | {rate} | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: entry["chunks_per_s"] for name, entry in results["runs"].items() if "chunks_per_s" in entry}
    fig, ax = plt.subplots(figsize=(7, 3.2))
    colours = [
        "#999999" if name.startswith("bound") else "#d62728" if name == "builtin" else "#1f77b4" for name in runs
    ]
    ax.barh(list(runs), list(runs.values()), color=colours)
    for y, value in enumerate(runs.values()):
        ax.text(value, y, f" {value:.0f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("chunks per second (higher is better)")
    ax.set_title(f"Ingestion over HTTP: {results['files']} files, {results['chunks']} chunks, 2 cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=60, help="how many .rst files of python3.11-doc (default 60)")
    parser.add_argument("--deb", help="a downloaded python3.11-doc .deb (default: apt-get download it)")
    parser.add_argument("--sources", type=Path, help="a folder of documents to use instead of the Debian package")
    parser.add_argument("--skip", default="", help="comma-separated runs to skip (e.g. 'ours (torch)')")
    parser.add_argument(
        "--only", default="", help="comma-separated runs to make, the others skipped (e.g. 'bound onnx,ours')"
    )
    parser.add_argument("--threads", action="store_true", help="the server's CPU time per thread (needs py-spy)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one server run may take")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ingest-docs-") as work:
        sources = args.sources or debian_docs(Path(work), args.deb)
        files = pick_files(sources, args.files)
        chunks = stack_chunks(files)
        texts = [text for file_chunks in chunks.values() for text in file_chunks]
        results: dict = {
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "chunks": len(texts),
            "runs": {},
        }
        print(f"{len(files)} files -> {len(texts)} chunks", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="ingest-yaml-") as tmp:
            # Each server run sits next to the bound of its embedding model: load on these machines drifts.
            runs = {
                "bound torch": None,
                "ours (torch)": common.run_yaml_with_settings(Path(tmp) / "torch.yaml", embedder="torch"),
                "builtin": common.run_yaml_without_module(Path(tmp) / "builtin.yaml"),
                "bound onnx": None,
                "ours": common.RUN_YAML,
            }
            for name, run_yaml in runs.items():
                if name in skip or (only and name not in only):
                    continue
                try:
                    if run_yaml is None:
                        results["runs"][name] = bound(texts, BOUND_EMBEDDERS[name])
                    else:
                        results["runs"][name] = ingest(name, run_yaml, files, chunks, args.timeout, args.threads)
                except Exception as error:  # noqa: BLE001 - a failed run is a result, the others go on
                    results["runs"][name] = {"error": str(error)[:500]}
                    print(f"[{name}] FAILED: {error}", file=sys.stderr)
                print(f"[{name}] {results['runs'][name]}", file=sys.stderr)
    results["total_s"] = round(time.perf_counter() - began, 1)
    common.save_results(results, args.out, "ingest", plot, table)


if __name__ == "__main__":
    main()
