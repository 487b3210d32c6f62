"""SqliteKVStore: Llama Stack's SQLite kvstore rows through one long-lived connection. It must read and write the
same rows as Llama Stack's own store, see what other connections commit, survive concurrent writers, serve more
than one event loop (the stack initializes providers in one and serves in another), and leave every acknowledged
write on disk when the process is killed."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from llama_stack.core.storage.datatypes import SqliteKVStoreConfig
from llama_stack.core.storage.kvstore.sqlite import SqliteKVStoreImpl

from llama_stack_milvus.vector_io.kvstore import SerializedWrites, SqliteKVStore


@pytest.fixture
async def stores(tmp_path):
    """(ours, Llama Stack's) on one database file, as open_kvstore sets it up."""
    theirs = SqliteKVStoreImpl(SqliteKVStoreConfig(db_path=str(tmp_path / "kv.db")))
    await theirs.initialize()
    ours = SqliteKVStore(theirs.db_path)
    await ours.initialize()
    yield ours, theirs
    await ours.shutdown()


async def test_rows_are_llama_stacks_both_ways(stores):
    ours, theirs = stores
    await ours.set("a:2", "two")
    await theirs.set("a:1", "one")
    await theirs.set("a:10", "ten")
    await theirs.set("b:1", "other range")
    assert await theirs.get("a:2") == "two"
    assert await ours.get("a:1") == "one"
    assert await ours.get("missing") is None
    assert await ours.keys_in_range("a:", "a:\xff") == ["a:1", "a:10", "a:2"]
    assert await ours.values_in_range("a:", "a:\xff") == ["one", "ten", "two"]
    await ours.delete("a:1")
    assert await theirs.get("a:1") is None
    assert await ours.keys_in_range("a:", "a:\xff") == ["a:10", "a:2"]


async def test_concurrent_writers_through_other_connections_lose_nothing(stores):
    ours, theirs = stores
    count = 150

    def raw_writer() -> None:  # another connection of the process, e.g. another store of the stack
        connection = sqlite3.connect(theirs.db_path, timeout=30, isolation_level=None)
        for i in range(count):
            connection.execute("INSERT OR REPLACE INTO kvstore (key, value) VALUES (?, ?)", (f"raw:{i:03}", str(i)))
        connection.close()

    async def their_writer() -> None:  # Llama Stack's store, one write at a time (its 5 s busy timeout is short)
        for i in range(count):
            await theirs.set(f"theirs:{i:03}", str(i))

    writer = threading.Thread(target=raw_writer)
    writer.start()
    await asyncio.gather(*(ours.set(f"ours:{i:03}", str(i)) for i in range(count)), their_writer())
    await asyncio.to_thread(writer.join)
    for prefix in ("raw:", "ours:", "theirs:"):
        assert await ours.values_in_range(prefix, prefix + "\xff") == [str(i) for i in range(count)], prefix


async def test_compare_and_set_has_one_winner_among_concurrent_writers(stores):
    store = SerializedWrites(stores[0])
    won = await asyncio.gather(*(store.compare_and_set("k", None, f"v{i}") for i in range(16)))
    assert won.count(True) == 1
    assert await store.get("k") == f"v{won.index(True)}"


def test_one_store_serves_successive_event_loops(tmp_path):
    theirs = SqliteKVStoreImpl(SqliteKVStoreConfig(db_path=str(tmp_path / "kv.db")))
    asyncio.run(theirs.initialize())
    ours = SqliteKVStore(theirs.db_path)
    asyncio.run(ours.initialize())
    asyncio.run(ours.set("k", "set in the first loop"))
    assert asyncio.run(ours.get("k")) == "set in the first loop"
    asyncio.run(ours.shutdown())


WRITE_THEN_WAIT = """
import asyncio, sys
from llama_stack_milvus.vector_io.kvstore import SqliteKVStore

async def main():
    store = SqliteKVStore(sys.argv[1])
    await store.initialize()
    for i in range(50):
        await store.set(f"k:{i:02}", "x" * 1000)
    print("written", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_acknowledged_writes_survive_kill_9(tmp_path):
    db_path = str(tmp_path / "kv.db")
    asyncio.run(SqliteKVStoreImpl(SqliteKVStoreConfig(db_path=db_path)).initialize())
    child = subprocess.Popen(
        [sys.executable, "-c", WRITE_THEN_WAIT, db_path],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout.readline().strip() == "written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert Path(db_path).exists()
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("SELECT count(*) FROM kvstore WHERE key LIKE 'k:%'").fetchone()[0] == 50
