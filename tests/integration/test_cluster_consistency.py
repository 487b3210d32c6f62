"""Correctness across replicas: two replicas of distributions/milvus-cluster on one real PostgreSQL and one real
Milvus server (milvus-lite server), each replica called directly (A and B), so that every test knows which process
did what. The balancer in front is tested in test_cluster.py.

Each test reproduces a way the stack's per-process state broke with two replicas: a store made on A unknown to B,
writes lost between replicas, a deleted store still served, batches invisible to (or resumed by every) replica,
an empty-store answer that stayed empty. Leases last LEASE_SECONDS here (15 s by default) so that a kill -9 is taken
over quickly.
"""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydoc_corpus
import pytest
from llama_stack_client import LlamaStackClient, NotFoundError
from test_cluster import milvus_rows
from test_reliability_crash import assert_milvus_matches_records, recorded_chunks, upload_paths

from llama_stack_milvus_devtools.cluster import Cluster

pytestmark = [pytest.mark.server]

LEASE_SECONDS = 3
BATCH_FILES = 200
KILL_AFTER_COMPLETED = 30
DEADLINE_S = 600
DOC = b"Milvus keeps the vectors of every replica. The kvstore on PostgreSQL keeps the records."


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLAMA_STACK_MILVUS_LEASE_SECONDS", str(LEASE_SECONDS))
        cluster = Cluster(tmp_path_factory.mktemp("consistency"), replicas=2, port=0, chat=False)
        try:
            cluster.start()
        except RuntimeError as exc:
            pytest.fail(str(exc))
    yield cluster
    cluster.stop(purge=True)


def client(cluster: Cluster, replica: int) -> LlamaStackClient:
    return LlamaStackClient(base_url=cluster.replica_urls[replica], timeout=300, max_retries=0)


def upload(c: LlamaStackClient, name: str, text: bytes = DOC) -> str:
    return c.files.create(file=(name, text), purpose="assistants").id


def test_a_store_made_on_a_is_used_at_once_through_b(cluster):
    a, b = client(cluster, 0), client(cluster, 1)
    store = a.vector_stores.create(name="made-on-a")
    assert b.vector_stores.retrieve(store.id).name == "made-on-a"
    assert store.id in {s.id for s in b.vector_stores.list(limit=100)}

    file_id = upload(b, "on-b.txt")
    attached = b.vector_stores.files.create(store.id, file_id=file_id)
    assert attached.status == "completed", attached.last_error
    hits = b.vector_stores.search(store.id, query="vectors of every replica").data
    assert [hit.file_id for hit in hits] == [file_id]
    assert [f.id for f in a.vector_stores.files.list(store.id)] == [file_id]

    batch = a.vector_stores.file_batches.create(store.id, file_ids=[upload(a, f"batch-{i}.txt") for i in range(3)])
    deadline = time.monotonic() + DEADLINE_S
    while (polled := b.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert polled.status == "completed" and polled.file_counts.completed == 3, polled
    assert len(b.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id).data) == 3
    assert a.vector_stores.retrieve(store.id).file_counts.total == 4


def test_a_store_b_saw_empty_answers_once_a_has_filled_it(cluster):
    a, b = client(cluster, 0), client(cluster, 1)
    store = a.vector_stores.create(name="empty-first")
    assert b.vector_stores.search(store.id, query="records on PostgreSQL").data == []
    file_id = upload(a, "later.txt")
    assert a.vector_stores.files.create(store.id, file_id=file_id).status == "completed"
    assert [hit.file_id for hit in b.vector_stores.search(store.id, query="records on PostgreSQL").data] == [file_id]


def test_concurrent_attaches_through_a_and_b_give_exact_counts(cluster):
    a, b = client(cluster, 0), client(cluster, 1)
    store = a.vector_stores.create(name="concurrent")
    files = [upload(a, f"c-{i}.txt", DOC + f" Document number {i}.".encode()) for i in range(16)]
    # Every file through both replicas at once: each is attached once, however the two race.
    jobs = [(replica, file_id) for file_id in files for replica in (a, b)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: job[0].vector_stores.files.create(store.id, file_id=job[1]), jobs))
    assert Counter(r.status for r in results) == {"completed": 2 * len(files)}
    for replica in (a, b):
        counts = replica.vector_stores.retrieve(store.id).file_counts
        assert (counts.total, counts.completed, counts.in_progress) == (len(files), len(files), 0), counts
        assert sorted(f.id for f in replica.vector_stores.files.list(store.id, limit=100)) == sorted(files)
    recorded = {file_id: recorded_chunks(a, store.id, file_id) for file_id in files}
    assert_milvus_matches_records(milvus_rows(cluster, store.id), recorded)


def test_updates_on_a_and_b_at_once_lose_nothing(cluster):
    """A renames while B changes metadata, 15 times each at the same moments: both last values survive (the
    mixin wrote back its whole copy of the store: one side's change was lost)."""
    a, b = client(cluster, 0), client(cluster, 1)
    store = a.vector_stores.create(name="name-start")
    rounds = 15
    start = threading.Barrier(2)

    def rename() -> None:
        start.wait()
        for i in range(rounds):
            a.vector_stores.update(store.id, name=f"name-{i}")

    def tag() -> None:
        start.wait()
        for i in range(rounds):
            b.vector_stores.update(store.id, metadata={"round": str(i)})

    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(rename), pool.submit(tag)]:
            future.result()
    for replica in (a, b):
        final = replica.vector_stores.retrieve(store.id)
        assert final.name == f"name-{rounds - 1}"
        assert final.metadata["round"] == str(rounds - 1), final.metadata


def test_deleted_on_a_is_a_404_on_b(cluster):
    a, b = client(cluster, 0), client(cluster, 1)
    store = a.vector_stores.create(name="to-delete")
    kept, dropped = upload(a, "kept.txt"), upload(a, "dropped.txt", DOC + b" Dropped.")
    for file_id in (kept, dropped):
        assert b.vector_stores.files.create(store.id, file_id=file_id).status == "completed"
    assert b.vector_stores.search(store.id, query="records").data  # B has the store's index open

    a.vector_stores.files.delete(dropped, vector_store_id=store.id)
    with pytest.raises(NotFoundError):
        b.vector_stores.files.retrieve(dropped, vector_store_id=store.id)
    assert [f.id for f in b.vector_stores.files.list(store.id)] == [kept]
    assert b.vector_stores.retrieve(store.id).file_counts.total == 1

    a.vector_stores.delete(store.id)
    with pytest.raises(NotFoundError):
        b.vector_stores.retrieve(store.id)
    with pytest.raises(NotFoundError):
        b.vector_stores.search(store.id, query="records")
    with pytest.raises(NotFoundError):
        b.vector_stores.files.list(store.id)
    assert store.id not in {s.id for s in b.vector_stores.list(limit=100)}


def test_a_batch_cancelled_through_b_stops_on_a(cluster):
    a, b = client(cluster, 0), client(cluster, 1)
    store = a.vector_stores.create(name="cancel")
    files = [upload(a, f"x-{i}.txt", DOC + f" Cancel {i}.".encode()) for i in range(60)]
    batch = a.vector_stores.file_batches.create(store.id, file_ids=files)
    cancelled = b.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled"
    time.sleep(LEASE_SECONDS)
    settled = a.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    assert settled.status == "cancelled"
    time.sleep(3)
    later = a.vector_stores.retrieve(store.id).file_counts.total
    assert later == a.vector_stores.retrieve(store.id).file_counts.total
    assert later < len(files), "the batch ran to its end although it was cancelled"


@pytest.mark.slow
def test_kill_9_of_a_replica_mid_batch_is_resumed_once_by_the_other(cluster):
    """A 200-file batch created on B runs on B; B is killed with kill -9 after 30 files. A takes it over once B's
    lease has expired, exactly once (one "Resuming a file batch" in A's log), and Milvus then holds exactly the
    chunks recorded for each file."""
    a, b = client(cluster, 0), client(cluster, 1)
    paths = pydoc_corpus.smallest(BATCH_FILES)
    store = b.vector_stores.create(name="kill-mid-batch")
    files = upload_paths(b, paths)
    log_offset = cluster.replicas[0].log_size()
    batch = b.vector_stores.file_batches.create(store.id, file_ids=list(files))
    deadline = time.monotonic() + DEADLINE_S
    while True:
        progress = a.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
        if progress.file_counts.completed >= KILL_AFTER_COMPLETED:
            break
        assert time.monotonic() < deadline and progress.status == "in_progress", progress
        time.sleep(0.3)
    cluster.kill_replica(1)
    assert progress.file_counts.completed < BATCH_FILES, "the batch finished before the kill: nothing was tested"
    try:
        while (polled := a.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)).status == (
            "in_progress"
        ):
            assert time.monotonic() < deadline, cluster.replicas[0].log_tail()
            time.sleep(1)
        assert polled.status == "completed", polled
        assert polled.file_counts.completed == BATCH_FILES, polled.file_counts
        assert cluster.replicas[0].log_since(log_offset).count("Resuming a file batch") == 1
        counts = a.vector_stores.retrieve(store.id).file_counts
        assert (counts.total, counts.completed) == (BATCH_FILES, BATCH_FILES), counts
        recorded = {file_id: recorded_chunks(a, store.id, file_id) for file_id in files}
        assert_milvus_matches_records(milvus_rows(cluster, store.id), recorded)
    finally:
        cluster.start_replica(1, wait_for_balancer=False)


def test_postgres_restart_is_a_503_then_replicas_recover_without_a_restart(cluster):
    a, b = client(cluster, 0), client(cluster, 1)
    store = a.vector_stores.create(name="before-outage")
    file_id = upload(a, "outage.txt")
    assert a.vector_stores.files.create(store.id, file_id=file_id).status == "completed"

    cluster.postgres.stop()
    try:
        for url in cluster.replica_urls:
            with httpx.Client(base_url=url, timeout=120) as http:
                answers = {
                    "search": http.post(f"/v1/vector_stores/{store.id}/search", json={"query": "records"}),
                    "retrieve": http.get(f"/v1/vector_stores/{store.id}"),
                    "files": http.get("/v1/files"),
                    "create": http.post("/v1/vector_stores", json={"name": "during-outage"}),
                }
            statuses = {name: answer.status_code for name, answer in answers.items()}
            assert set(statuses.values()) == {503}, (url, statuses, {n: a.text[:300] for n, a in answers.items()})
            assert all("PostgreSQL" in answer.text for answer in answers.values()), answers["search"].text
    finally:
        cluster.postgres.start()

    for replica in (a, b):
        assert [hit.file_id for hit in replica.vector_stores.search(store.id, query="records").data] == [file_id]
        assert replica.files.retrieve(file_id).id == file_id
    after = b.vector_stores.create(name="after-outage")
    new_file = upload(b, "after.txt", DOC + b" After the outage.")
    assert a.vector_stores.files.create(after.id, file_id=new_file).status == "completed"
    assert [hit.file_id for hit in b.vector_stores.search(after.id, query="after the outage").data] == [new_file]
