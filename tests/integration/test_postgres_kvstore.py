"""Our kv_postgres store (postgres_kvstore.py) and the 503s of PostgreSQL outages, against a real PostgreSQL server
on loopback: namespaces, byte-order ranges, compare-and-set races, the event loop kept free, kill -9 and restart."""

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import Request
from llama_stack.core.storage.datatypes import KVStoreReference, PostgresKVStoreConfig, PostgresSqlStoreConfig
from llama_stack.core.storage.kvstore import kvstore as upstream_kvstore
from llama_stack.core.storage.kvstore import postgres as upstream_postgres
from llama_stack.core.storage.kvstore.postgres.postgres import PostgresKVStoreImpl
from llama_stack.core.storage.sqlstore.sqlalchemy_sqlstore import SqlAlchemySqlStoreImpl
from llama_stack_api.internal.sqlstore import ColumnType

from llama_stack_milvus import postgres_kvstore
from llama_stack_milvus.errors import MetadataStoreUnavailableError
from llama_stack_milvus.http_contract import exception_handler
from llama_stack_milvus.postgres_kvstore import PostgresKVStore, install
from llama_stack_milvus_devtools.postgres import DATABASE, USER, PostgresServer

ICU_DATABASE = "icu_en_us"  # a database whose collation is not byte order: ':' and case sort differently
_tables = itertools.count()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    admin = server.connect()
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            f"CREATE DATABASE {ICU_DATABASE} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    admin.close()
    yield server
    server.remove()


def config(server: PostgresServer, namespace: str | None = "ns", table: str | None = None, **kwargs):
    """A kv_postgres config on a table of its own (unless `table` is given). host="localhost" gives a second
    connection pool to the same server: another replica, as far as PostgreSQL can tell."""
    settings = dict(host=server.host, port=server.port, db=DATABASE, user=USER, password=server.password)
    settings.update(kwargs)
    return PostgresKVStoreConfig(table_name=table or f"kv_{next(_tables)}", namespace=namespace, **settings)


async def open_store(cfg: PostgresKVStoreConfig) -> PostgresKVStore:
    store = PostgresKVStore(cfg)
    await store.initialize()
    return store


async def test_keys_come_back_as_set_and_every_one_reads(postgres):
    store = await open_store(config(postgres, namespace="vector_io::milvus"))
    keys = ["openai_vector_stores:v3::vs_1", "openai_vector_stores:v3::vs_2", "openai_vector_stores:v3::vs_2:x"]
    for key in keys:
        await store.set(key, f"value of {key}")
    await store.set("other:key", "outside the range")

    listed = await store.keys_in_range("openai_vector_stores:v3::", "openai_vector_stores:v3::\xff")

    assert listed == keys
    assert [await store.get(key) for key in listed] == [f"value of {key}" for key in keys]
    assert await store.values_in_range("openai_vector_stores:", "openai_vector_stores:\xff") == [
        f"value of {key}" for key in keys
    ]
    await store.shutdown()


async def test_ranges_are_in_byte_order_whatever_the_database_collation(postgres):
    keys = ["file:a", "file:B", "file:Z:1", "file::x", "file:9", "file:zeta", "file:a:b", "file:A-1", "file:~"]
    outside = ["file", "file-x", "fileA", "files:a", "FILE:a"]
    cfg = config(postgres, db=ICU_DATABASE)
    store = await open_store(cfg)
    for key in keys + outside:
        await store.set(key, key)

    assert await store.keys_in_range("file:", "file:\xff") == sorted(keys)
    assert await store.values_in_range("file:", "file:\xff") == sorted(keys)
    assert await store.keys_in_range("file:a", "file:b") == ["file:a", "file:a:b"]

    # The collation makes the difference: upstream's ranges on this database lose keys (ICU sorts "file:zeta"
    # after "file:\xff") and take others in.
    upstream = PostgresKVStoreImpl(cfg)
    await upstream.initialize()
    upstream_keys = await upstream.keys_in_range("file:", "file:\xff")
    await upstream.shutdown()
    assert sorted(key.removeprefix("ns:") for key in upstream_keys) != sorted(keys)
    await store.shutdown()


async def test_namespaces_are_isolated(postgres):
    table = f"kv_{next(_tables)}"
    stores = {ns: await open_store(config(postgres, namespace=ns, table=table)) for ns in ("a", "b", None)}
    for ns, store in stores.items():
        await store.set("k:1", f"{ns}1")
        await store.set("k:2", f"{ns}2")

    for ns, store in stores.items():
        assert await store.get("k:1") == f"{ns}1"
        assert await store.values_in_range("k:", "k:\xff") == [f"{ns}1", f"{ns}2"]
        assert await store.keys_in_range("k:", "k:\xff") == ["k:1", "k:2"]
    await stores["a"].delete("k:1")
    assert await stores["a"].get("k:1") is None
    assert await stores["b"].get("k:1") == "b1"
    for store in stores.values():
        await store.shutdown()


async def test_compare_and_set_and_delete_if(postgres):
    store = await open_store(config(postgres))

    assert await store.compare_and_set("lease", None, "replica-a") is True
    assert await store.compare_and_set("lease", None, "replica-b") is False
    assert await store.compare_and_set("lease", "replica-b", "replica-c") is False
    assert await store.get("lease") == "replica-a"
    assert await store.compare_and_set("lease", "replica-a", "replica-b") is True
    assert await store.get("lease") == "replica-b"

    assert await store.delete_if("lease", "replica-a") is False
    assert await store.get("lease") == "replica-b"
    assert await store.delete_if("lease", "replica-b") is True
    assert await store.get("lease") is None
    assert await store.delete_if("lease", "replica-b") is False

    # An expired key reads as absent, so it is absent to compare_and_set too.
    await store.set("old", "gone", expiration=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1))
    assert await store.get("old") is None
    assert await store.compare_and_set("old", "gone", "x") is False
    assert await store.compare_and_set("old", None, "new") is True
    assert await store.get("old") == "new"
    await store.shutdown()


async def test_exactly_one_concurrent_compare_and_set_wins_each_round(postgres):
    # Two pools ("127.0.0.1" and "localhost"): two replicas, 8 connections each, 16 contenders per round.
    table = f"kv_{next(_tables)}"
    replicas = [await open_store(config(postgres, table=table, host=host)) for host in ("127.0.0.1", "localhost")]
    assert replicas[0]._pool is not replicas[1]._pool
    current = None
    for round_ in range(25):
        contenders = [(replicas[i % 2], f"round {round_} contender {i}") for i in range(16)]
        won = await asyncio.gather(*(store.compare_and_set("counter", current, value) for store, value in contenders))
        assert won.count(True) == 1, f"round {round_}: {won.count(True)} winners"
        winner = contenders[won.index(True)][1]
        assert await replicas[1].get("counter") == winner
        current = winner
    for store in replicas:
        await store.shutdown()


async def test_a_call_waiting_on_postgres_leaves_the_event_loop_free(postgres):
    cfg = config(postgres)
    store = await open_store(cfg)
    await store.set("row", "before")
    other = postgres.connect()  # another client holds the row's lock in an open transaction
    with other.cursor() as cursor:
        cursor.execute(f"UPDATE {cfg.table_name} SET value = 'locked' WHERE key = 'ns:row'")

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    # Released from another thread, so that a call blocking the event loop makes this test fail, not hang.
    release = threading.Timer(1.0, lambda: (other.commit(), other.close()))
    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    release.start()
    await asyncio.wait_for(store.set("row", "after"), 10)
    waited = time.monotonic() - started
    ticking.cancel()

    assert waited >= 0.9  # it really waited on the lock
    assert ticks >= 50, f"the event loop ticked {ticks} times in 1 s while a call waited on PostgreSQL"
    assert await store.get("row") == "after"
    await store.shutdown()


async def test_postgres_killed_is_a_bounded_503_and_the_same_store_recovers(postgres):
    store = await open_store(config(postgres, namespace="registry"))
    await store.set("k", "v")
    await store.get("k")  # connections are open when PostgreSQL dies

    postgres.kill()
    try:
        started = time.monotonic()
        with pytest.raises(MetadataStoreUnavailableError) as failure:
            await store.get("k")
        elapsed = time.monotonic() - started
    finally:
        postgres.start()

    assert failure.value.status_code == httpx.codes.SERVICE_UNAVAILABLE
    message = str(failure.value)
    assert message.startswith(
        f"PostgreSQL at {postgres.host}:{postgres.port} (kvstore namespace registry) is unavailable while reading 'k'"
    )
    assert postgres.password not in message
    assert postgres_kvstore.RETRY_FOR_S - 1 <= elapsed <= postgres_kvstore.RETRY_FOR_S + 3

    # Back: the same instance works, on every pool thread, without any restart of ours.
    assert await asyncio.gather(*(store.get("k") for _ in range(20))) == ["v"] * 20
    await store.set("k", "after restart")
    assert await store.get("k") == "after restart"
    await store.shutdown()


async def test_a_call_during_a_short_outage_is_retried_until_postgres_is_back(postgres):
    store = await open_store(config(postgres))
    await store.set("k", "v")
    postgres.kill()
    try:
        pending = asyncio.create_task(store.get("k"))
        await asyncio.sleep(0.3)
        assert not pending.done()
    finally:
        await asyncio.to_thread(postgres.start)
    assert await asyncio.wait_for(pending, postgres_kvstore.RETRY_FOR_S + 3) == "v"
    await store.shutdown()


async def test_replicas_create_the_same_table_at_once(postgres):
    table = f"kv_{next(_tables)}"
    stores = [PostgresKVStore(config(postgres, table=table, host=host)) for host in ("127.0.0.1", "localhost")]
    await asyncio.gather(*(store.initialize() for store in stores))
    await stores[0].set("k", "v")
    assert await stores[1].get("k") == "v"
    for store in stores:
        await store.shutdown()


async def test_install_makes_existing_and_new_upstream_stores_ours(postgres, monkeypatch):
    monkeypatch.setattr(upstream_postgres, "PostgresKVStoreImpl", PostgresKVStoreImpl)  # as before any install
    monkeypatch.setattr(upstream_kvstore, "_KVSTORE_INSTANCES", {})
    monkeypatch.setattr(upstream_kvstore, "_KVSTORE_BACKENDS", {"kv_pg": config(postgres, namespace=None)})
    registry = await upstream_kvstore.kvstore_impl(KVStoreReference(backend="kv_pg", namespace="registry"))
    assert type(registry) is PostgresKVStoreImpl
    await registry.set("models:m1", "m1")
    assert await registry.keys_in_range("models:", "models:\xff") == ["registry:models:m1"]  # upstream's defect
    upstream_connection = registry._conn

    install()

    assert type(registry) is PostgresKVStore
    assert upstream_connection.closed
    assert await registry.keys_in_range("models:", "models:\xff") == ["models:m1"]
    assert await registry.compare_and_set("models:m1", "m1", "m1 v2") is True
    later = await upstream_kvstore.kvstore_impl(KVStoreReference(backend="kv_pg", namespace="prompts"))
    assert type(later) is PostgresKVStore
    await later.set("models:m1", "prompt")
    assert await registry.get("models:m1") == "m1 v2"
    await upstream_kvstore.shutdown_kvstore_backends()


async def test_sql_postgres_outage_answers_503_naming_postgres_and_recovers(postgres):
    """Llama Stack's sql_postgres store (files, responses): a 503 while PostgreSQL is down, then it works again."""
    sql_config = PostgresSqlStoreConfig(
        host=postgres.host, port=postgres.port, db=DATABASE, user=USER, password=postgres.password
    )
    store = SqlAlchemySqlStoreImpl(sql_config)
    table = f"files_{uuid.uuid4().hex[:8]}"
    await store.create_table(table, {"id": ColumnType.STRING, "name": ColumnType.STRING})
    await store.insert(table, {"id": "file-1", "name": "a.txt"})
    request = Request({"type": "http", "method": "GET", "path": "/v1/files", "headers": [], "query_string": b""})

    postgres.kill()
    try:
        with pytest.raises(Exception) as failure:
            await store.fetch_all(table)
        response = await exception_handler(request, failure.value)
    finally:
        postgres.start()

    assert response.status_code == httpx.codes.SERVICE_UNAVAILABLE, response.body
    body = response.body.decode()
    assert f"PostgreSQL at {postgres.host}:{postgres.port} (sql_postgres store) is unavailable" in body
    assert "while serving GET /v1/files" in body
    assert postgres.password not in body
    rows = await store.fetch_all(table)  # the same engine, no restart: stale pooled connections are replaced
    assert [row["id"] for row in rows.data] == ["file-1"]
    await store.shutdown()


async def test_kvstore_outage_through_the_http_handler_is_the_same_503(postgres, monkeypatch):
    store = await open_store(config(postgres))
    monkeypatch.setattr(postgres_kvstore, "RETRY_FOR_S", 0.5)
    postgres.kill()
    try:
        with pytest.raises(MetadataStoreUnavailableError) as failure:
            await store.set("k", "v")
    finally:
        postgres.start()
    request = Request({"type": "http", "method": "POST", "path": "/v1/x", "headers": [], "query_string": b""})
    response = await exception_handler(request, failure.value)
    assert response.status_code == httpx.codes.SERVICE_UNAVAILABLE
    assert "PostgreSQL at" in response.body.decode() and "while writing 'k'" in response.body.decode()
    await store.shutdown()
