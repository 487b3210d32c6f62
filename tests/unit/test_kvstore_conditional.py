"""Conditional writes of the SQLite kvstore path (SerializedWrites), the kv_postgres table-name check, and which
exceptions the HTTP handler reads as PostgreSQL being unavailable."""

import asyncio
import sqlite3

import psycopg2
import pytest
import sqlalchemy.exc
from llama_stack.core.storage.datatypes import PostgresKVStoreConfig, SqliteKVStoreConfig
from llama_stack.core.storage.kvstore.sqlite import SqliteKVStoreImpl

from llama_stack_milvus.errors import MetadataStoreUnavailableError
from llama_stack_milvus.http_contract import postgres_unavailable
from llama_stack_milvus.postgres_kvstore import PostgresKVStore
from llama_stack_milvus.vector_io.kvstore import SerializedWrites
from llama_stack_milvus_devtools.ports import free_port


@pytest.fixture
async def sqlite_store(tmp_path):
    inner = SqliteKVStoreImpl(SqliteKVStoreConfig(db_path=str(tmp_path / "kv.db")))
    await inner.initialize()
    store = SerializedWrites(inner)
    yield store
    await store.shutdown()


async def test_compare_and_set_and_delete_if_on_sqlite(sqlite_store):
    assert await sqlite_store.compare_and_set("k", None, "a") is True
    assert await sqlite_store.compare_and_set("k", None, "b") is False
    assert await sqlite_store.compare_and_set("k", "b", "c") is False
    assert await sqlite_store.compare_and_set("k", "a", "b") is True
    assert await sqlite_store.get("k") == "b"
    assert await sqlite_store.delete_if("k", "a") is False
    assert await sqlite_store.delete_if("k", "b") is True
    assert await sqlite_store.get("k") is None


async def test_concurrent_compare_and_set_in_one_process_has_one_winner(sqlite_store):
    current = None
    for round_ in range(5):
        values = [f"{round_}-{i}" for i in range(8)]
        won = await asyncio.gather(*(sqlite_store.compare_and_set("k", current, value) for value in values))
        assert won.count(True) == 1
        current = values[won.index(True)]
        assert await sqlite_store.get("k") == current


def test_a_table_name_that_is_not_an_identifier_is_refused():
    config = PostgresKVStoreConfig(user="u", table_name="kv; DROP TABLE users", namespace="ns")
    with pytest.raises(ValueError, match="Invalid kv_postgres table_name"):
        PostgresKVStore(config)


def raised(function, *args, **kwargs) -> BaseException:
    try:
        function(*args, **kwargs)
    except Exception as e:
        return e
    raise AssertionError("expected an exception")


def test_a_refused_psycopg2_connection_is_postgres_unavailable():
    port = free_port()
    error = raised(psycopg2.connect, host="127.0.0.1", port=port, dbname="x", user="u", password="secret-pw")
    unavailable = postgres_unavailable(error, "serving GET /v1/files")
    assert isinstance(unavailable, MetadataStoreUnavailableError)
    assert str(unavailable).startswith("PostgreSQL at the configured address (metadata store) is unavailable while")
    assert f"port {port} failed" in str(unavailable)
    assert "secret-pw" not in str(unavailable)


def test_other_failures_are_not_postgres():
    def sqlite_locked():
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as e:
            raise sqlalchemy.exc.OperationalError("UPDATE x", {}, e) from e

    def refused_elsewhere():
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)")

    assert postgres_unavailable(raised(sqlite_locked), "x") is None
    assert postgres_unavailable(raised(refused_elsewhere), "x") is None
    assert postgres_unavailable(ValueError("bad"), "x") is None
