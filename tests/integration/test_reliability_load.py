"""16 concurrent clients for 60 s against one server, mixing searches (every mode, with filters), uploads +
attaches, listings and deletes. Afterwards: no 5xx and no transport error was seen, every file a client attached
and did not delete is listed once and completed, every deleted file is gone, and Milvus holds exactly the recorded
chunks of the live files (none lost, none twice, none of a deleted file). p50/p95/max latency per operation is
printed and written to <basetemp>/reliability_measurements.json.
"""

import random
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
import testdocs
from test_reliability_crash import assert_milvus_matches_records, milvus_rows

pytestmark = [pytest.mark.server, pytest.mark.slow]

CLIENTS = 16
DURATION_S = 60
# Text formats only: their bytes are fixed, so every upload of a doc yields the same chunks.
UPLOAD_DOCS = [doc for doc in testdocs.ALL if not doc.filename.endswith(".pdf")]
WEIGHTS = {"search": 60, "attach": 12, "list": 18, "delete": 10}
FILTERS = [
    None,
    {"type": "eq", "key": "topic", "value": "memory"},
    {"type": "in", "key": "topic", "value": ["numbers", "windows", "stdlib"]},
    {
        "type": "and",
        "filters": [{"type": "gte", "key": "year", "value": 2019}, {"type": "eq", "key": "draft", "value": False}],
    },
    {"type": "ne", "key": "topic", "value": "data-structures"},
]
RANKINGS = [None, {"ranker": "rrf"}, {"ranker": "weighted", "alpha": 0.7}]


@dataclass
class Run:
    store_id: str
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    attached: dict[str, str] = field(default_factory=dict)  # file id -> doc key (attach answered completed)
    deleted: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, operation: str, seconds: float, response: httpx.Response) -> bool:
        with self.lock:
            self.latencies[operation].append(seconds)
            if response.status_code >= 500 or (response.status_code >= 400 and operation != "search"):
                self.errors.append(f"{operation}: {response.status_code} {response.text[:300]}")
                return False
        return True


def timed(run: Run, http: httpx.Client, operation: str, method: str, path: str, **kwargs) -> httpx.Response | None:
    """One request, timed; None (and an error recorded) for a transport error or an unexpected status."""
    started = time.monotonic()
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as e:
        with run.lock:
            run.errors.append(f"{operation}: {e!r}")
        return None
    return response if run.record(operation, time.monotonic() - started, response) else None


def client_loop(base_url: str, run: Run, seed: int, deadline: float) -> None:
    rng = random.Random(seed)
    mine: list[str] = []  # files this client attached and has not deleted
    with httpx.Client(base_url=base_url, timeout=300) as http:
        while time.monotonic() < deadline:
            operation = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
            if operation == "delete" and not mine:
                operation = "attach"
            if operation == "search":
                doc = rng.choice(testdocs.ALL)
                body = {"query": doc.question, "search_mode": rng.choice(["vector", "keyword", "hybrid"])}
                if flt := rng.choice(FILTERS):
                    body["filters"] = flt
                if (ranking := rng.choice(RANKINGS)) and body["search_mode"] == "hybrid":
                    body["ranking_options"] = ranking
                response = timed(run, http, "search", "POST", f"/v1/vector_stores/{run.store_id}/search", json=body)
                if response is not None and response.status_code != 200:
                    with run.lock:
                        run.errors.append(f"search: {response.status_code} {response.text[:300]}")
            elif operation == "attach":
                doc = rng.choice(UPLOAD_DOCS)
                files = {"file": (doc.filename, doc.data())}
                upload = timed(run, http, "upload", "POST", "/v1/files", files=files, data={"purpose": "assistants"})
                if upload is None:
                    continue
                file_id = upload.json()["id"]
                body = {"file_id": file_id, "attributes": testdocs.attributes_of(doc)}
                response = timed(run, http, "attach", "POST", f"/v1/vector_stores/{run.store_id}/files", json=body)
                if response is not None:
                    assert response.json()["status"] == "completed", response.text
                    with run.lock:
                        run.attached[file_id] = doc.key
                    mine.append(file_id)
            elif operation == "list":
                path = rng.choice([f"/v1/vector_stores/{run.store_id}/files", "/v1/vector_stores"])
                timed(run, http, "list", "GET", path, params={"limit": 100})
            else:
                file_id = mine.pop(rng.randrange(len(mine)))
                response = timed(run, http, "delete", "DELETE", f"/v1/vector_stores/{run.store_id}/files/{file_id}")
                if response is not None:
                    with run.lock:
                        run.deleted.add(file_id)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    quantiles = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {
        "count": len(ordered),
        "p50_ms": round(quantiles[49] * 1000, 1),
        "p95_ms": round(quantiles[94] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def all_files(http: httpx.Client, store_id: str) -> list[dict]:
    files, after = [], None
    while True:
        page = http.get(
            f"/v1/vector_stores/{store_id}/files", params={"limit": 100, **({"after": after} if after else {})}
        )
        assert page.status_code == 200, page.text
        files += page.json()["data"]
        if not page.json()["has_more"]:
            return files
        after = page.json()["last_id"]


def test_16_clients_for_60_s_mixing_every_operation(make_server, reliability_figures):
    server = make_server("load")
    with httpx.Client(base_url=server.base_url, timeout=300) as http:
        store_id = http.post("/v1/vector_stores", json={"name": "load"}).json()["id"]
        run = Run(store_id)
        # Seed the store so that searches have something to find from the first second.
        for doc in UPLOAD_DOCS:
            file_id = http.post(
                "/v1/files", files={"file": (doc.filename, doc.data())}, data={"purpose": "assistants"}
            ).json()["id"]
            body = {"file_id": file_id, "attributes": testdocs.attributes_of(doc)}
            assert http.post(f"/v1/vector_stores/{store_id}/files", json=body).json()["status"] == "completed"
            run.attached[file_id] = doc.key

        deadline = time.monotonic() + DURATION_S
        with ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(client_loop, server.base_url, run, seed, deadline) for seed in range(CLIENTS)]:
                future.result()

        figures = {operation: percentiles(values) for operation, values in sorted(run.latencies.items())}
        print(f"\n{CLIENTS} clients, {DURATION_S} s: latency per operation")
        for operation, row in figures.items():
            n, p50, p95, top = row["count"], row["p50_ms"], row["p95_ms"], row["max_ms"]
            print(f"  {operation:7} n={n:5}  p50 {p50:8} ms  p95 {p95:8} ms  max {top:8} ms")
        reliability_figures["load"] = {"clients": CLIENTS, "duration_s": DURATION_S, "operations": figures}
        assert not run.errors, f"{len(run.errors)} errors, first: {run.errors[:5]}"

        live = {fid: key for fid, key in run.attached.items() if fid not in run.deleted}
        listed = all_files(http, store_id)
        assert sorted(f["id"] for f in listed) == sorted(live), "listed files differ from attached minus deleted"
        assert {f["status"] for f in listed} == {"completed"}
        recorded = {
            fid: len(http.get(f"/v1/vector_stores/{store_id}/files/{fid}/content").json()["data"]) for fid in live
        }
        # The same document always yields the same chunks: a count that differs means chunks were lost or doubled.
        per_doc = defaultdict(set)
        for fid, count in recorded.items():
            per_doc[live[fid]].add(count)
        assert all(len(counts) == 1 for counts in per_doc.values()), dict(per_doc)
        reliability_figures["load"] |= {
            "files_attached": len(run.attached),
            "files_deleted": len(run.deleted),
            "files_live": len(live),
            "chunks_live": sum(recorded.values()),
        }
    server.stop()
    assert_milvus_matches_records(milvus_rows(server, store_id), recorded)


FIRST_REQUESTS_RACE = """
import importlib, sys, threading
from pymilvus.client.utils import SciPyHelper
from llama_stack_milvus.vector_io.backend import open_lite_backend
from llama_stack_milvus.vector_io.config import InlineMilvusConfig

open_lite_backend(InlineMilvusConfig(db_path=sys.argv[1], persistence={"namespace": "n", "backend": "b"}))
errors, start = [], threading.Barrier(6)

def first_keyword_search():  # what pymilvus runs on a request thread before sending a search
    start.wait()
    try:
        SciPyHelper.is_scipy_sparse("a query")
    except Exception as e:
        errors.append(repr(e))

def embedding_thread_imports_scipy():
    start.wait()
    try:
        importlib.import_module("scipy.sparse")
    except Exception as e:
        errors.append(repr(e))

threads = [threading.Thread(target=f) for f in [first_keyword_search, embedding_thread_imports_scipy] * 3]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
"""


def test_first_concurrent_keyword_searches_do_not_race_on_scipy(tmp_path):
    """The 503 a CI run saw: pymilvus' lazy scipy check on request threads racing a plain scipy import (without the
    backend settling it first this failed in about one fresh process in three)."""
    for attempt in range(6):
        done = subprocess.run(
            [sys.executable, "-c", FIRST_REQUESTS_RACE, str(tmp_path / f"race{attempt}.db")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "[]", (attempt, done.stdout)
