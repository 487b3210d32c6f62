"""The scale-out deployment from real parts (llama_stack_milvus_devtools.cluster): PostgreSQL, a Milvus Lite server,
three replicas of distributions/milvus-cluster and HAProxy in front, all on loopback. Clients talk to HAProxy only,
except the health test.

Health-check window: HAProxy checks ``GET /v1/health`` on each replica every second and takes a replica out after 2
failures (checks time out after 2 s), so a dead replica stays in rotation for at most
``haproxy.HEALTH_CHECK_WINDOW_S`` = 4 s (about 2 s after kill -9: its port refuses at once). New requests reaching a
dead replica inside the window are refused and sent to another replica (retry-on conn-failure, redispatch): only
the requests sent to the replica before its processes are gone fail.

Correctness across replicas (a store made on one replica used on another, concurrent attaches, deletes, a batch
resumed after a kill) is tested in the provider's own cluster tests.
"""

import io
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import testdocs
from llama_stack_client import LlamaStackClient
from openai import OpenAI
from test_reliability_crash import assert_milvus_matches_records
from test_reliability_load import CLIENTS, DURATION_S, UPLOAD_DOCS, Run, all_files, client_loop, percentiles

from llama_stack_milvus_devtools import milvus
from llama_stack_milvus_devtools.cluster import Cluster
from llama_stack_milvus_devtools.haproxy import HEALTH_CHECK_WINDOW_S

pytestmark = [pytest.mark.server]

REPLICAS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), replicas=REPLICAS, port=0, chat=False)
    try:
        cluster.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield cluster
    cluster.stop(purge=True)


def seeded_store(url: str, name: str) -> tuple[str, dict[str, str]]:
    """A new store holding every text test document: (store id, file id -> doc key)."""
    attached = {}
    with httpx.Client(base_url=url, timeout=300) as http:
        store = http.post("/v1/vector_stores", json={"name": name})
        assert store.status_code == 200, store.text
        store_id = store.json()["id"]
        for doc in UPLOAD_DOCS:
            upload = http.post("/v1/files", files={"file": (doc.filename, doc.data())}, data={"purpose": "assistants"})
            assert upload.status_code == 200, upload.text
            body = {"file_id": upload.json()["id"], "attributes": testdocs.attributes_of(doc)}
            attach = http.post(f"/v1/vector_stores/{store_id}/files", json=body)
            assert attach.status_code == 200 and attach.json()["status"] == "completed", attach.text
            attached[upload.json()["id"]] = doc.key
    return store_id, attached


def test_every_replica_answers_health_and_haproxy_routes_to_all(cluster):
    for url in cluster.replica_urls:
        response = httpx.get(f"{url}/v1/health", timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "OK", (url, response.text)
    assert cluster.haproxy.server_states() == {f"replica-{i}": "UP" for i in range(REPLICAS)}
    before = {name: int(row["stot"]) for name, row in cluster.haproxy.stats().items()}
    for _ in range(3 * REPLICAS):
        assert httpx.get(f"{cluster.url}/v1/health", timeout=10).status_code == 200
    served = {name: int(row["stot"]) - before[name] for name, row in cluster.haproxy.stats().items()}
    assert all(count >= 1 for count in served.values()), f"round robin skipped a replica: {served}"


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets LISTENing on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add("127.0.0.1" if address == "0100007F" else address)
    return found


def test_the_balancer_and_the_replicas_listen_on_loopback_only(cluster):
    assert listening_addresses(cluster.port) == {"127.0.0.1"}
    for replica in cluster.replicas:
        assert listening_addresses(replica.port) == {"127.0.0.1"}, replica.base_url
    # What a client on the network sees: nothing on the machine's other addresses.
    outside = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for address in outside:
        with pytest.raises(OSError), socket.create_connection((address, cluster.port), timeout=2):
            pass


def test_a_store_with_files_is_searched_through_the_balancer(cluster):
    """Real clients (OpenAI SDK, llama-stack-client) through HAProxy: consecutive requests land on different
    replicas."""
    openai = OpenAI(base_url=f"{cluster.url}/v1", api_key="none")
    store = openai.vector_stores.create(name="through-haproxy")
    file_ids = []
    for doc in UPLOAD_DOCS[:3]:
        uploaded = openai.files.create(file=(doc.filename, io.BytesIO(doc.data())), purpose="assistants")
        attached = openai.vector_stores.files.create(
            vector_store_id=store.id, file_id=uploaded.id, attributes=testdocs.attributes_of(doc)
        )
        assert attached.status == "completed", attached
        file_ids.append(uploaded.id)
    client = LlamaStackClient(base_url=cluster.url)
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 3
    assert sorted(f.id for f in client.vector_stores.files.list(store.id)) == sorted(file_ids)
    for _ in range(REPLICAS):
        hits = client.vector_stores.search(store.id, query=UPLOAD_DOCS[0].question, max_num_results=3).data
        assert hits and hits[0].file_id == file_ids[0], [(h.filename, h.score) for h in hits]


@pytest.mark.slow
def test_a_replica_killed_under_load_is_routed_around_then_serves_again(cluster, reliability_figures):
    """8 clients search and upload through HAProxy; replica 1 is killed (kill -9) after 5 s. The only requests that
    fail (5xx or a connection closed without a response) are those sent before its processes are gone: the ones it
    was handling, and the ones its port still accepted while the kernel tore the killed process down. Every request
    sent after that is refused by the dead port and sent to another replica, although HAProxy marks it DOWN only
    seconds later. Then it starts again on its port and serves again."""
    store_id, _ = seeded_store(cluster.url, "kill-under-load")
    clients, results, lock = 8, [], threading.Lock()
    stop = threading.Event()

    def client_loop_searching(seed: int) -> None:
        doc = testdocs.ALL[seed % len(testdocs.ALL)]
        with httpx.Client(base_url=cluster.url, timeout=120) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    if seed % 4 == 0:
                        files = {"file": (doc.filename, b"uploaded under load " + doc.key.encode())}
                        response = http.post("/v1/files", files=files, data={"purpose": "assistants"})
                    else:
                        response = http.post(f"/v1/vector_stores/{store_id}/search", json={"query": doc.question})
                    outcome: int | str = response.status_code
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                with lock:
                    results.append((started, time.monotonic(), outcome))

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client_loop_searching, seed) for seed in range(clients)]
        time.sleep(5)
        killed_at = time.monotonic()
        cluster.kill_replica(1)
        # kill_replica returns once every process of the replica has exited, so its port no longer accepts.
        gone_after = time.monotonic() - killed_at
        down_after = None
        while time.monotonic() < killed_at + 15:
            if down_after is None and cluster.haproxy.server_states()["replica-1"].startswith("DOWN"):
                down_after = round(time.monotonic() - killed_at, 2)
            time.sleep(0.1)
        served_before = int(cluster.haproxy.stats()["replica-1"]["stot"])
        cluster.start_replica(1)
        back_at = time.monotonic()
        time.sleep(5)
        stop.set()
        for future in futures:
            future.result()

    failed = [(s - killed_at, e - killed_at, outcome) for s, e, outcome in results if outcome != 200]
    ok_after_back = [r for r in results if r[0] > back_at and r[2] == 200]
    served_since_back = int(cluster.haproxy.stats()["replica-1"]["stot"]) - served_before
    reliability_figures["cluster_kill"] = {
        "requests": len(results),
        "failed": len(failed),
        "processes_gone_after_s": round(gone_after, 3),
        "marked_down_after_s": down_after,
        "window_s": HEALTH_CHECK_WINDOW_S,
        "served_by_restarted_replica": served_since_back,
    }
    print(f"\nkill -9 under load: {reliability_figures['cluster_kill']}")
    assert down_after is not None and down_after <= HEALTH_CHECK_WINDOW_S + 1, down_after
    sent_to_a_closed_port = [f for f in failed if f[0] > gone_after]
    assert not sent_to_a_closed_port, f"requests sent after the replica was gone failed: {sent_to_a_closed_port[:5]}"
    assert not [f for f in failed if f[1] < 0], f"requests failed before the kill: {failed[:5]}"
    assert not [f for f in failed if isinstance(f[2], int) and f[2] < 500], f"non-5xx failures: {failed[:5]}"
    assert ok_after_back and served_since_back > 0, "the restarted replica got no traffic"
    assert httpx.get(f"{cluster.replica_urls[1]}/v1/health", timeout=10).status_code == 200


def run_load(url: str, name: str) -> tuple[Run, dict]:
    """test_reliability_load's 16 clients x 60 s (searches, attaches, listings, deletes) through ``url``."""
    store_id, attached = seeded_store(url, name)
    run = Run(store_id)
    run.attached.update(attached)
    deadline = time.monotonic() + DURATION_S
    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(client_loop, url, run, seed, deadline) for seed in range(CLIENTS)]:
            future.result()
    figures = {operation: percentiles(values) for operation, values in sorted(run.latencies.items())}
    return run, figures


def assert_nothing_lost(cluster: Cluster, run: Run) -> dict:
    """Every attached, undeleted file is listed once and completed, the same document always has the same chunk
    count, and Milvus holds exactly the recorded chunks."""
    live = {fid: key for fid, key in run.attached.items() if fid not in run.deleted}
    with httpx.Client(base_url=cluster.url, timeout=300) as http:
        listed = all_files(http, run.store_id)
        assert sorted(f["id"] for f in listed) == sorted(live), "listed files differ from attached minus deleted"
        assert {f["status"] for f in listed} == {"completed"}
        counts = http.get(f"/v1/vector_stores/{run.store_id}").json()["file_counts"]
        assert (counts["total"], counts["completed"]) == (len(live), len(live)), counts
        recorded = {
            fid: len(http.get(f"/v1/vector_stores/{run.store_id}/files/{fid}/content").json()["data"]) for fid in live
        }
    per_doc = defaultdict(set)
    for fid, count in recorded.items():
        per_doc[live[fid]].add(count)
    assert all(len(counts) == 1 for counts in per_doc.values()), dict(per_doc)
    assert_milvus_matches_records(milvus_rows(cluster, run.store_id), recorded)
    return {"files_live": len(live), "chunks_live": sum(recorded.values())}


def milvus_rows(cluster: Cluster, store_id: str) -> list[tuple[str, str]]:
    """(row id, file id) of every row of the store's collection on the cluster's Milvus server."""
    from llama_stack_milvus.vector_io.schema import collection_name_for

    client = milvus.connect(cluster.milvus.uri, cluster.milvus.token)
    try:
        name = collection_name_for(store_id)
        iterator = client.query_iterator(name, batch_size=1000, filter="", output_fields=["row_id", "$meta"])
        rows = []
        while batch := iterator.next():
            rows += [(row["row_id"], row.get("attr.file_id")) for row in batch]
        iterator.close()
        return rows
    finally:
        client.close()


@pytest.mark.slow
def test_16_clients_for_60_s_across_3_replicas(cluster, reliability_figures):
    run, figures = run_load(cluster.url, "cluster-load")
    reliability_figures["cluster_load_3_replicas"] = {"operations": figures}
    print(f"\n{CLIENTS} clients x {DURATION_S} s through HAProxy, {REPLICAS} replicas: {figures}")
    assert not run.errors, f"{len(run.errors)} errors, first: {run.errors[:5]}"
    reliability_figures["cluster_load_3_replicas"] |= assert_nothing_lost(cluster, run)


@pytest.mark.slow
def test_16_clients_for_60_s_on_one_replica_of_3_workers(cluster, reliability_figures):
    """The same load on one replica running server.workers: 3 (three uvicorn processes behind one port), the
    other replicas stopped. Runs last: it changes the cluster."""
    for index in range(1, REPLICAS):
        cluster.stop_replica(index)
    cluster.start_replica(0, workers=3)
    deadline = time.monotonic() + 2 * HEALTH_CHECK_WINDOW_S
    while set(cluster.haproxy.server_states().values()) != {"UP", "DOWN"} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.haproxy.server_states() == {"replica-0": "UP", "replica-1": "DOWN", "replica-2": "DOWN"}
    run, figures = run_load(cluster.url, "cluster-load-workers")
    reliability_figures["cluster_load_1_replica_3_workers"] = {"operations": figures}
    print(f"\n{CLIENTS} clients x {DURATION_S} s through HAProxy, 1 replica x 3 workers: {figures}")
    assert not run.errors, f"{len(run.errors)} errors, first: {run.errors[:5]}"
    reliability_figures["cluster_load_1_replica_3_workers"] |= assert_nothing_lost(cluster, run)
