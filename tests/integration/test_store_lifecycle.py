"""usage_bytes and expires_after through a real server (milvus-embedded): the mixin left usage_bytes at 0 and stored
expires_after without ever applying it."""

import json
import sqlite3
import time
from contextlib import closing

import pytest
from llama_stack_client import BadRequestError, LlamaStackClient, NotFoundError

from llama_stack_milvus.vector_io.store_records import SECONDS_PER_DAY

pytestmark = [pytest.mark.server]

TEXTS = {
    "one.txt": "Milvus stores the vectors. " * 40,
    "two.txt": "Ünïcode text counts in UTF-8 bytes: é, ß, 東京. " * 30,
}


def client_of(server) -> LlamaStackClient:
    return LlamaStackClient(base_url=server.base_url, timeout=300, max_retries=0)


def stored_bytes(client: LlamaStackClient, store_id: str, file_id: str) -> int:
    content = client.vector_stores.files.content(file_id, vector_store_id=store_id).data
    return sum(len(part.text.encode()) for part in content)


def test_usage_bytes_is_the_size_of_the_stored_text(stack_server):
    client = client_of(stack_server)
    store = client.vector_stores.create(name="usage")
    assert store.usage_bytes == 0
    sizes = {}
    for name, text in TEXTS.items():
        file_id = client.files.create(file=(name, text.encode()), purpose="assistants").id
        attached = client.vector_stores.files.create(store.id, file_id=file_id)
        assert attached.status == "completed", attached.last_error
        sizes[file_id] = stored_bytes(client, store.id, file_id)
        assert sizes[file_id] >= len(text.encode().strip()) > 0  # chunk overlap may repeat some text
        assert client.vector_stores.files.retrieve(file_id, vector_store_id=store.id).usage_bytes == sizes[file_id]
    assert client.vector_stores.retrieve(store.id).usage_bytes == sum(sizes.values())
    dropped = next(iter(sizes))
    client.vector_stores.files.delete(dropped, vector_store_id=store.id)
    assert client.vector_stores.retrieve(store.id).usage_bytes == sum(sizes.values()) - sizes[dropped]


@pytest.mark.parametrize(
    "policy",
    [{"anchor": "created_at", "days": 1}, {"anchor": "last_active_at", "days": 0}, {"days": 2}],
)
def test_a_bad_expiry_policy_is_a_400(stack_server, policy):
    client = client_of(stack_server)
    with pytest.raises(BadRequestError, match="expires_after"):
        client.vector_stores.create(name="bad-expiry", expires_after=policy)
    store = client.vector_stores.create(name="good-expiry")
    with pytest.raises(BadRequestError, match="expires_after"):
        client.vector_stores.update(store.id, expires_after=policy)


def age_store(kvstore_path, store_id: str, days: float) -> None:
    """Moves the store's last activity ``days`` back, in the kvstore file (the server is stopped)."""
    with closing(sqlite3.connect(kvstore_path)) as db, db:
        ((key, value),) = db.execute(
            "SELECT key, value FROM kvstore WHERE key LIKE ?", (f"%openai_vector_stores:%::{store_id}",)
        ).fetchall()
        record = json.loads(value)
        record["last_active_at"] = int(time.time() - days * SECONDS_PER_DAY)
        db.execute("UPDATE kvstore SET value = ? WHERE key = ?", (json.dumps(record), key))


def keys_of(kvstore_path, store_id: str) -> list[str]:
    with closing(sqlite3.connect(kvstore_path)) as db:
        return [key for (key,) in db.execute("SELECT key FROM kvstore WHERE key LIKE ?", (f"%{store_id}%",))]


def test_an_expired_store_is_gone_with_its_records(make_server):
    server = make_server("expiry")
    client = client_of(server)
    policy = {"anchor": "last_active_at", "days": 1}
    expiring = client.vector_stores.create(name="expiring", expires_after=policy)
    assert expiring.expires_at == expiring.last_active_at + SECONDS_PER_DAY
    kept = client.vector_stores.create(name="kept", expires_after=policy)
    file_id = client.files.create(file=("e.txt", b"Expiring stores are removed."), purpose="assistants").id
    assert client.vector_stores.files.create(expiring.id, file_id=file_id).status == "completed"
    server.stop()
    kvstore = server.data_dir / "kvstore.db"
    age_store(kvstore, expiring.id, days=1.01)
    age_store(kvstore, kept.id, days=0.99)

    server.start()
    client = client_of(server)
    with pytest.raises(NotFoundError):
        client.vector_stores.retrieve(expiring.id)
    with pytest.raises(NotFoundError):
        client.vector_stores.search(expiring.id, query="removed")
    listed = {store.id for store in client.vector_stores.list(limit=100)}
    assert expiring.id not in listed and kept.id in listed
    deadline = time.monotonic() + 60
    while leftover := [key for key in keys_of(kvstore, expiring.id) if "registry" not in key]:
        assert time.monotonic() < deadline, f"records of the expired store remain: {leftover}"
        time.sleep(0.5)
    assert client.vector_stores.retrieve(kept.id).status == "completed"
