"""The provider's kvstore, made safe for concurrent requests and cheap per operation.

Llama Stack 0.7.3's SQLite kvstore opens a connection per operation, in SQLite's default rollback-journal mode with
a 5 s busy timeout. Under 16 concurrent clients, readers and writers locked each other out for longer than that and
attaches failed with "database is locked" (a 500). WAL lets readers work beside a writer, and one writer at a time
in this process (an asyncio lock) keeps our writes from waiting on each other.

Each of its operations also starts a thread (aiosqlite) and opens and closes the database: 1.6 ms of CPU, and an
attach makes about twenty (records, leases, the batch's progress), a tenth of a core during ingestion. Ours keeps
one connection open in one thread of its own (SqliteKVStore).

A kv_postgres backend gets our PostgresKVStore instead (postgres_kvstore.py): shared by replicas, its conditional
writes are atomic in PostgreSQL, and PostgreSQL needs no serializing.
"""

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from llama_stack.core.storage.datatypes import KVStoreReference
from llama_stack.core.storage.kvstore import KVStore, kvstore_impl
from llama_stack.core.storage.kvstore.postgres.postgres import PostgresKVStoreImpl
from llama_stack.core.storage.kvstore.sqlite import SqliteKVStoreImpl
from llama_stack.log import get_logger

from ..postgres_kvstore import PostgresKVStore, adopt

logger = get_logger(name=__name__, category="vector_io::milvus")

T = TypeVar("T")


class SerializedWrites:
    """A KVStore whose writes run one at a time; reads pass straight through."""

    def __init__(self, inner: KVStore):
        self.inner = inner
        self._write_lock = asyncio.Lock()

    async def set(self, key: str, value: str, expiration: datetime | None = None) -> None:
        async with self._write_lock:
            await self.inner.set(key, value, expiration)

    async def delete(self, key: str) -> None:
        async with self._write_lock:
            await self.inner.delete(key)

    async def compare_and_set(self, key: str, expected: str | None, value: str) -> bool:
        """Writes `value` only if the stored value is `expected` (None: absent); True when written. Atomic only
        within this process, under the write lock: the SQLite kvstore belongs to one stack process (replicas share
        a kv_postgres store, whose compare_and_set is atomic in PostgreSQL)."""
        async with self._write_lock:
            if await self.inner.get(key) != expected:
                return False
            await self.inner.set(key, value)
            return True

    async def delete_if(self, key: str, expected: str) -> bool:
        """Deletes `key` only if its stored value is `expected`; True when deleted. Atomic within this process."""
        async with self._write_lock:
            if await self.inner.get(key) != expected:
                return False
            await self.inner.delete(key)
            return True

    async def get(self, key: str) -> str | None:
        return await self.inner.get(key)

    async def values_in_range(self, start_key: str, end_key: str) -> list[str]:
        return await self.inner.values_in_range(start_key, end_key)

    async def keys_in_range(self, start_key: str, end_key: str) -> list[str]:
        return await self.inner.keys_in_range(start_key, end_key)

    async def shutdown(self) -> None:
        await self.inner.shutdown()


class SqliteKVStore:
    """Llama Stack's SQLite kvstore (same file, table and rows), through one connection that lives as long as the
    process, used by one thread only: each statement is its own transaction (autocommit), durable when it returns,
    and every read sees what any connection has committed. Other connections to the file (other stores of the
    stack) wait up to 30 s for a write lock, as ours do."""

    def __init__(self, db_path: str):
        self.db_path = db_path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kvstore")
        self._connection: sqlite3.Connection | None = None

    async def initialize(self) -> None:
        """Opens the connection and switches the file to WAL (a property of the file: every connection uses it)."""

        def connect() -> None:
            self._connection = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            try:
                self._connection.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as e:
                logger.warning("Could not switch the kvstore to WAL", db_path=self.db_path, error=str(e))

        await asyncio.get_running_loop().run_in_executor(self._thread, connect)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            raise RuntimeError(f"The kvstore {self.db_path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, self._connection)

    async def set(self, key: str, value: str, expiration: datetime | None = None) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO kvstore (key, value, expiration) VALUES (?, ?, ?)", (key, value, expiration)
            )
        )

    async def get(self, key: str) -> str | None:
        row = await self._run(lambda c: c.execute("SELECT value FROM kvstore WHERE key = ?", (key,)).fetchone())
        return row[0] if row is not None and isinstance(row[0], str) else None

    async def delete(self, key: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM kvstore WHERE key = ?", (key,)))

    async def values_in_range(self, start_key: str, end_key: str) -> list[str]:
        return [row[0] for row in await self._range("value", start_key, end_key)]

    async def keys_in_range(self, start_key: str, end_key: str) -> list[str]:
        return [row[0] for row in await self._range("key", start_key, end_key)]

    async def _range(self, column: str, start_key: str, end_key: str) -> list[Any]:
        query = f"SELECT {column} FROM kvstore WHERE key >= ? AND key <= ? ORDER BY key"
        return await self._run(lambda c: c.execute(query, (start_key, end_key)).fetchall())

    async def shutdown(self) -> None:
        if self._connection is not None:
            await self._run(lambda c: c.close())
            self._connection = None
        self._thread.shutdown()


async def open_kvstore(reference: KVStoreReference) -> SerializedWrites | PostgresKVStore:
    store = await kvstore_impl(reference)  # creates the SQLite table
    if isinstance(store, PostgresKVStoreImpl):
        return adopt(store)  # already ours once the provider has loaded (postgres_kvstore.install)
    if isinstance(store, SqliteKVStoreImpl) and not store._is_memory_db():
        ours = SqliteKVStore(store.db_path)
        await ours.initialize()
        return SerializedWrites(ours)
    return SerializedWrites(store)
