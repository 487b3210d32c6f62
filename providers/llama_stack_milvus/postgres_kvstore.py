"""The stack's kv_postgres kvstore, made fit for several replicas sharing one PostgreSQL. Llama Stack 0.7.3's
PostgresKVStoreImpl is replaced (install()) for every kv_postgres store of the stack, ours and the registry's alike.
Its defects, and what this class does instead:

- keys_in_range returned keys WITH the namespace prefix, so a `get` of a returned key found nothing (our resume of
  interrupted attaches and the stale-key cleanup silently did nothing; the stack's prompts listing too): keys come
  back as they were set;
- one connection, opened at start-up and never again: after PostgreSQL restarted, every call failed with "cursor
  already closed" until the stack was restarted. Connections are per worker thread, a broken one is dropped, and a
  call is retried with backoff for RETRY_FOR_S; past that it is a 503 naming PostgreSQL, and the next call
  reconnects;
- synchronous psycopg2 inside async methods: one slow query stalled every request of the server. Every call runs
  on a small thread pool (POOL_SIZE threads, one connection each, shared by the namespaces of one database);
- ranges compared keys in the database's collation, in which ':' and case need not sort as in Python (ranges end
  at prefix + "\\xff"): they compare in byte order (COLLATE "C", which for UTF-8 is Python's str order), backed by
  an index of that order next to the primary key.

Added for replicas: compare_and_set and delete_if, one statement each, atomic in PostgreSQL.
The table is the same (key TEXT PRIMARY KEY, value TEXT, expiration TIMESTAMP): data written by either class
stays readable by the other.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
from llama_stack.core.storage.datatypes import PostgresKVStoreConfig
from llama_stack.core.storage.kvstore import kvstore as upstream_kvstore
from llama_stack.core.storage.kvstore import postgres as upstream_postgres
from llama_stack.core.storage.kvstore.postgres.postgres import PostgresKVStoreImpl
from llama_stack.log import get_logger
from psycopg2.extensions import connection as Connection

from .errors import MetadataStoreUnavailableError

logger = get_logger(name=__name__, category="providers::utils")

RETRY_FOR_S = 5.0  # how long one call keeps retrying a lost PostgreSQL before it answers 503
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
POOL_SIZE = 8  # threads, hence connections, per database per process
# libpq settings: a dead server or a silent network shows as an error in seconds, not when the OS gives up.
CONNECT_OPTIONS = {
    "connect_timeout": 2,  # libpq's minimum
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,
}
# psycopg2 raises these for a refused, broken or closed connection (and for a few server-side aborts, such as
# deadlocks, which a retry also settles).
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass
class _Pool:
    """Worker threads with one connection each, for one database; shared by the stores (namespaces) using it."""

    config: PostgresKVStoreConfig
    executor: ThreadPoolExecutor = field(init=False)
    users: int = 0
    ready_tables: set[str] = field(default_factory=set)
    # Bumped when a connection breaks: the other threads' connections are from before the outage too.
    generation: int = 0
    _local: threading.local = field(default_factory=threading.local)
    _connections: set[Connection] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="kv-postgres")

    def connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.closed or self._local.generation != self.generation):
            self.discard(conn)
            conn = None
        if conn is None:
            generation = self.generation
            conn = psycopg2.connect(
                host=self.config.host,
                port=self.config.port,
                dbname=self.config.db,
                user=self.config.user,
                password=self.config.password,
                sslmode=self.config.ssl_mode,
                sslrootcert=self.config.ca_cert_path,
                **CONNECT_OPTIONS,
            )
            conn.autocommit = True
            self._local.conn, self._local.generation = conn, generation
            with self._lock:
                self._connections.add(conn)
        return conn

    def discard(self, conn: Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._connections.discard(conn)
        try:
            conn.close()
        except psycopg2.Error:
            pass

    def broken(self, conn: Connection | None) -> None:
        self.generation += 1
        if conn is not None:
            self.discard(conn)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.close()
            except psycopg2.Error:
                pass


_POOLS: dict[tuple, _Pool] = {}


def _pool_key(config: PostgresKVStoreConfig) -> tuple:
    return (
        config.host,
        str(config.port),
        config.db,
        config.user,
        config.password,
        config.ssl_mode,
        config.ca_cert_path,
    )


def _acquire_pool(config: PostgresKVStoreConfig) -> _Pool:
    pool = _POOLS.get(_pool_key(config))
    if pool is None:
        pool = _POOLS[_pool_key(config)] = _Pool(config)
    pool.users += 1
    return pool


def _release_pool(pool: _Pool) -> None:
    pool.users -= 1
    if pool.users <= 0:
        _POOLS.pop(_pool_key(pool.config), None)
        pool.close()


class PostgresKVStore(PostgresKVStoreImpl):
    """A kv_postgres store: keys without the namespace, calls off the event loop, reconnects by itself, byte-order
    ranges, and compare_and_set / delete_if for state that several replicas update."""

    def __init__(self, config: PostgresKVStoreConfig):
        super().__init__(config)
        self._adopt()

    def _adopt(self) -> None:
        """Sets up this class's state; also for an instance of the upstream class whose __class__ install() switched
        (its one connection is closed: calls use the pool from now on)."""
        if not TABLE_NAME.fullmatch(self.config.table_name):
            # Upstream's validator on table_name never runs (decorated in the wrong order); it is pasted into SQL.
            raise ValueError(f"Invalid kv_postgres table_name {self.config.table_name!r}: use letters, digits and _")
        upstream_conn = getattr(self, "_conn", None)
        if upstream_conn is not None:
            upstream_conn.close()
        self._conn = self._cursor = None
        self._prefix = f"{self.config.namespace}:" if self.config.namespace else ""
        self._table = self.config.table_name
        self._where = f"{self.config.host}:{self.config.port} (kvstore namespace {self.config.namespace or '-'})"
        self._pool = _acquire_pool(self.config)

    async def initialize(self) -> None:
        await self._run("creating its table", lambda cursor: None)

    async def shutdown(self) -> None:
        if self._pool is not None:
            _release_pool(self._pool)
            self._pool = None

    # ------------------------------------------------------------------------------------------ the KVStore API

    async def get(self, key: str) -> str | None:
        def get(cursor: Any) -> str | None:
            cursor.execute(
                f"SELECT value FROM {self._table} WHERE key = %s AND (expiration IS NULL OR expiration > NOW())",
                (self._prefix + key,),
            )
            row = cursor.fetchone()
            return row[0] if row else None

        return await self._run(f"reading {key!r}", get)

    async def set(self, key: str, value: str, expiration: datetime | None = None) -> None:
        def set_(cursor: Any) -> None:
            cursor.execute(
                f"INSERT INTO {self._table} (key, value, expiration) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expiration = EXCLUDED.expiration",
                (self._prefix + key, value, expiration),
            )

        await self._run(f"writing {key!r}", set_)

    async def delete(self, key: str) -> None:
        def delete(cursor: Any) -> None:
            cursor.execute(f"DELETE FROM {self._table} WHERE key = %s", (self._prefix + key,))

        await self._run(f"deleting {key!r}", delete)

    async def values_in_range(self, start_key: str, end_key: str) -> list[str]:
        rows = await self._range("value", start_key, end_key)
        return [value for (value,) in rows]

    async def keys_in_range(self, start_key: str, end_key: str) -> list[str]:
        rows = await self._range("key", start_key, end_key)
        return [key[len(self._prefix) :] for (key,) in rows]

    async def _range(self, column: str, start_key: str, end_key: str) -> list[tuple[str]]:
        def select(cursor: Any) -> list[tuple[str]]:
            # The three `key COLLATE "C"` must read exactly like the index's expression for the index to serve them.
            cursor.execute(
                f'SELECT {column} FROM {self._table} WHERE key COLLATE "C" >= %s AND key COLLATE "C" < %s '
                'AND (expiration IS NULL OR expiration > NOW()) ORDER BY key COLLATE "C"',
                (self._prefix + start_key, self._prefix + end_key),
            )
            return cursor.fetchall()

        return await self._run(f"listing {column}s from {start_key!r} to {end_key!r}", select)

    # ------------------------------------------------------------------------------------- conditional writes

    async def compare_and_set(self, key: str, expected: str | None, value: str) -> bool:
        """Writes `value` (without expiration) only if the stored value is `expected` (None: only if the key is
        absent or expired); True when written. Concurrent calls expecting the same value: exactly one wins."""
        stored_key = self._prefix + key
        attempts = 0

        def compare_and_set(cursor: Any) -> bool:
            nonlocal attempts
            attempts += 1
            if expected is None:
                # An expired row is absent to get(): replace it. Racing inserts: the loser waits for the winner's
                # row, then its WHERE is false, and nothing is written.
                cursor.execute(
                    f"INSERT INTO {self._table} AS t (key, value, expiration) VALUES (%s, %s, NULL) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expiration = NULL "
                    "WHERE t.expiration IS NOT NULL AND t.expiration <= NOW()",
                    (stored_key, value),
                )
            else:
                # Racing updates: the loser waits for the winner's row lock, re-reads the row, no longer matches.
                cursor.execute(
                    f"UPDATE {self._table} SET value = %s, expiration = NULL "
                    "WHERE key = %s AND value = %s AND (expiration IS NULL OR expiration > NOW())",
                    (value, stored_key, expected),
                )
            if cursor.rowcount == 1:
                return True
            if attempts == 1:
                return False
            # A retry after the connection broke: the first attempt may have been committed unacknowledged.
            # Our value in place then is our write (values racing for one key differ, e.g. by holder id).
            cursor.execute(f"SELECT value FROM {self._table} WHERE key = %s", (stored_key,))
            row = cursor.fetchone()
            return row is not None and row[0] == value

        return await self._run(f"compare-and-set of {key!r}", compare_and_set)

    async def delete_if(self, key: str, expected: str) -> bool:
        """Deletes `key` only if its stored value is `expected`; True when deleted. (After a retry on a broken
        connection, a delete committed unacknowledged reads as False.)"""

        def delete_if(cursor: Any) -> bool:
            cursor.execute(
                f"DELETE FROM {self._table} WHERE key = %s AND value = %s "
                "AND (expiration IS NULL OR expiration > NOW())",
                (self._prefix + key, expected),
            )
            return cursor.rowcount == 1

        return await self._run(f"conditional delete of {key!r}", delete_if)

    # ---------------------------------------------------------------------------------------------- plumbing

    async def _run(self, action: str, statement: Callable[[Any], Any]) -> Any:
        """Runs `statement(cursor)` on a pool thread; a lost connection is retried for RETRY_FOR_S, then a 503."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("The PostgreSQL kvstore is shut down")
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + RETRY_FOR_S
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                return await loop.run_in_executor(pool.executor, self._attempt, pool, statement)
            except CONNECTION_ERRORS as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if time.monotonic() + backoff > deadline:
                    raise MetadataStoreUnavailableError(self._where, action, reason) from None
                if backoff == FIRST_BACKOFF_S:
                    logger.warning("PostgreSQL kvstore call failed, retrying", where=self._where, error=reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _attempt(self, pool: _Pool, statement: Callable[[Any], Any]) -> Any:
        conn = None
        try:
            conn = pool.connection()
            if self._table not in pool.ready_tables:
                self._create_table(conn)
                pool.ready_tables.add(self._table)
            with conn.cursor() as cursor:
                return statement(cursor)
        except CONNECTION_ERRORS:
            if conn is None or conn.closed:
                pool.broken(conn)
            raise

    def _create_table(self, conn: Connection) -> None:
        index = f"{self._table}_key_bytes"
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self._table} (key TEXT PRIMARY KEY, value TEXT, expiration TIMESTAMP)",
            f'CREATE INDEX IF NOT EXISTS {index} ON {self._table} (key COLLATE "C")',
        ]
        for sql in statements:
            try:
                with conn.cursor() as cursor:
                    cursor.execute(sql)
            except (psycopg2.errors.UniqueViolation, psycopg2.errors.DuplicateTable, psycopg2.errors.DuplicateObject):
                pass  # another replica created it at the same moment (IF NOT EXISTS does not cover that race)
            except psycopg2.errors.InsufficientPrivilege as e:
                if sql is statements[0]:
                    raise
                logger.warning(
                    "Cannot create the byte-order index of the kvstore table: ranges will scan the table",
                    table=self._table,
                    error=str(e).strip(),
                )


def adopt(store: PostgresKVStoreImpl) -> PostgresKVStore:
    """`store`, an upstream kv_postgres store, as ours (the same object, so every holder of it gets the fixes)."""
    if not isinstance(store, PostgresKVStore):
        store.__class__ = PostgresKVStore
        store._adopt()  # type: ignore[attr-defined]
    return store  # type: ignore[return-value]


def install() -> None:
    """Every kv_postgres store of the stack becomes ours: those created from now on (kvstore_impl imports the class
    from the package at each call) and those already made (the distribution registry's, before providers load)."""
    upstream_postgres.PostgresKVStoreImpl = PostgresKVStore
    for store in upstream_kvstore._KVSTORE_INSTANCES.values():
        if isinstance(store, PostgresKVStoreImpl):
            adopt(store)
