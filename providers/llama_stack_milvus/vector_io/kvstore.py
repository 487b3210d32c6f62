"""The provider's kvstore, made safe for concurrent requests.

Llama Stack 0.7.3's SQLite kvstore opens a connection per operation, in SQLite's default rollback-journal mode with
a 5 s busy timeout. Under 16 concurrent clients, readers and writers locked each other out for longer than that and
attaches failed with "database is locked" (a 500). WAL lets readers work beside a writer, and one writer at a time
in this process (an asyncio lock) keeps our writes from waiting on each other.

A kv_postgres backend gets our PostgresKVStore instead (postgres_kvstore.py): shared by replicas, its conditional
writes are atomic in PostgreSQL, and PostgreSQL needs no serializing.
"""

import asyncio
import sqlite3
from contextlib import closing
from datetime import datetime

from llama_stack.core.storage.datatypes import KVStoreReference
from llama_stack.core.storage.kvstore import KVStore, kvstore_impl
from llama_stack.core.storage.kvstore.postgres.postgres import PostgresKVStoreImpl
from llama_stack.core.storage.kvstore.sqlite import SqliteKVStoreImpl
from llama_stack.log import get_logger

from ..postgres_kvstore import PostgresKVStore, adopt

logger = get_logger(name=__name__, category="vector_io::milvus")


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


async def open_kvstore(reference: KVStoreReference) -> SerializedWrites | PostgresKVStore:
    store = await kvstore_impl(reference)
    if isinstance(store, PostgresKVStoreImpl):
        return adopt(store)  # already ours once the provider has loaded (postgres_kvstore.install)
    if isinstance(store, SqliteKVStoreImpl) and not store._is_memory_db():
        await asyncio.to_thread(enable_wal, store.db_path)
    return SerializedWrites(store)


def enable_wal(db_path: str) -> None:
    """WAL is a property of the database file: set once, every later connection uses it."""
    try:
        with closing(sqlite3.connect(db_path, timeout=30)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as e:
        logger.warning("Could not switch the kvstore to WAL", db_path=db_path, error=str(e))
