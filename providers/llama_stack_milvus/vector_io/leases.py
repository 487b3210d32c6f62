"""Leases in the shared kvstore: which process runs a file batch or an attach.

Several replicas (or uvicorn workers) share one kvstore. Work that outlives its request (a batch, an attach cut
short by a crash) must be done by exactly one of them, and taken over when that one dies. A lease is a kvstore key
naming its holder and when it expires; its holder renews it (a heartbeat every third of its life) and deletes it when
done. Another process may take it only once it has expired, through compare-and-set, so two never both win.
Expiry is judged on wall-clock time: replicas on several machines need their clocks roughly in step (NTP).
"""

import asyncio
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from llama_stack.log import get_logger

from ..errors import ProviderError

LEASE_PREFIX = "llama_stack_milvus:lease:v1::"
# A waiting attach asks again this often: attaching one file twice at once is rare (a client retrying).
WAIT_POLL_S = 0.2

logger = get_logger(name=__name__, category="vector_io::milvus")


class Leases:
    """The leases this process holds, on a kvstore with ``compare_and_set`` and ``delete_if``."""

    def __init__(self, kvstore: Any, seconds: float) -> None:
        self.kvstore = kvstore
        self.seconds = seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: dict[str, str] = {}  # lease name -> the value we wrote
        self._on_lost: dict[str, Callable[[], None]] = {}

    def _value(self) -> str:
        return json.dumps({"holder": self.holder, "expires_at": time.time() + self.seconds})

    @staticmethod
    def _live(raw: str | None) -> bool:
        return raw is not None and json.loads(raw)["expires_at"] > time.time()

    def holds(self, name: str) -> bool:
        return name in self._held

    async def held_elsewhere(self, name: str) -> bool:
        """Whether a live lease of another process (or of this one) covers ``name``."""
        return name in self._held or self._live(await self.kvstore.get(LEASE_PREFIX + name))

    async def acquire(self, name: str, on_lost: Callable[[], None] | None = None) -> bool:
        """Take the lease unless a live one exists, this process' own included (a lease excludes other tasks of
        this process too); ``on_lost`` runs if a later renewal finds it taken."""
        if name in self._held:
            return False
        current = await self.kvstore.get(LEASE_PREFIX + name)
        if self._live(current):
            return False
        value = self._value()
        if not await self.kvstore.compare_and_set(LEASE_PREFIX + name, current, value):
            return False
        self._held[name] = value
        if on_lost is not None:
            self._on_lost[name] = on_lost
        return True

    def watch(self, name: str, on_lost: Callable[[], None]) -> None:
        """``on_lost`` runs if a renewal finds the held lease ``name`` taken (for work handed to another task)."""
        self._on_lost[name] = on_lost

    async def acquire_waiting(self, name: str) -> None:
        """Take the lease, waiting while another holds it (until it is released or expires)."""
        while not await self.acquire(name):
            await asyncio.sleep(WAIT_POLL_S)

    async def release(self, name: str) -> None:
        value = self._held.pop(name, None)
        self._on_lost.pop(name, None)
        if value is not None:
            await self.kvstore.delete_if(LEASE_PREFIX + name, value)

    async def release_all(self) -> None:
        """On shutdown: the work stays recorded as unfinished, and another process may take it at once."""
        for name in list(self._held):
            try:
                await self.release(name)
            except ProviderError as e:  # the kvstore is down: the lease expires by itself
                logger.warning("Could not release a lease", lease=name, error=str(e))

    async def renew_all(self) -> None:
        for name, value in list(self._held.items()):
            renewed = self._value()
            if await self.kvstore.compare_and_set(LEASE_PREFIX + name, value, renewed):
                if name in self._held:
                    self._held[name] = renewed
                else:  # released while renewing: its delete missed the renewed value
                    await self.kvstore.delete_if(LEASE_PREFIX + name, renewed)
                continue
            if name not in self._held:
                continue
            # Not renewed in time (a stall longer than the lease, or the kvstore down that long): another process
            # has taken the work over, so this one stops.
            logger.warning("Lost a lease: another process took the work over", lease=name)
            del self._held[name]
            on_lost = self._on_lost.pop(name, None)
            if on_lost is not None:
                on_lost()

    async def heartbeat(self) -> None:
        """Renews every held lease, three times per lease life, until cancelled."""
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                await self.renew_all()
            except ProviderError as e:
                logger.warning("Could not renew leases", error=str(e))

    async def clear_all(self) -> None:
        """Deletes every lease: for a kvstore that only this process can use (Milvus Lite), whose leases were all
        left by an earlier process of this server, killed before it could release them."""
        for key in await self.kvstore.keys_in_range(LEASE_PREFIX, LEASE_PREFIX + "\xff"):
            await self.kvstore.delete(key)
