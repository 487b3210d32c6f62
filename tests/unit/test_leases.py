"""Leases over a kvstore with compare-and-set: one holder at a time, taken over once expired."""

import asyncio
import json

from llama_stack_milvus.vector_io.leases import LEASE_PREFIX, Leases


class DictStore:
    """The kvstore surface leases use, over a dict (the real stores are tested in the integration tests)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def compare_and_set(self, key: str, expected: str | None, value: str) -> bool:
        if self.data.get(key) != expected:
            return False
        self.data[key] = value
        return True

    async def delete_if(self, key: str, expected: str) -> bool:
        if self.data.get(key) != expected:
            return False
        del self.data[key]
        return True

    async def keys_in_range(self, start: str, end: str) -> list[str]:
        return sorted(k for k in self.data if start <= k < end)


def expire(store: DictStore, name: str) -> None:
    value = json.loads(store.data[LEASE_PREFIX + name])
    store.data[LEASE_PREFIX + name] = json.dumps({**value, "expires_at": 0})


def test_one_holder_at_a_time_and_release_frees_it():
    async def scenario():
        store = DictStore()
        a, b = Leases(store, 10), Leases(store, 10)
        assert await a.acquire("batch:1")
        assert not await b.acquire("batch:1")
        assert await b.held_elsewhere("batch:1")
        await a.release("batch:1")
        assert not await b.held_elsewhere("batch:1")
        assert await b.acquire("batch:1")

    asyncio.run(scenario())


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it_lost_it():
    async def scenario():
        store = DictStore()
        a, b = Leases(store, 10), Leases(store, 10)
        lost = []
        assert await a.acquire("batch:1", on_lost=lambda: lost.append("batch:1"))
        expire(store, "batch:1")
        assert await b.acquire("batch:1")
        await a.renew_all()
        assert lost == ["batch:1"]
        assert not a.holds("batch:1")
        await a.release("batch:1")  # no longer its own: must not delete b's lease
        assert json.loads(store.data[LEASE_PREFIX + "batch:1"])["holder"] == b.holder

    asyncio.run(scenario())


def test_renewal_keeps_a_lease_alive():
    async def scenario():
        store = DictStore()
        a = Leases(store, 10)
        await a.acquire("attach:vs:f")
        before = json.loads(store.data[LEASE_PREFIX + "attach:vs:f"])["expires_at"]
        await asyncio.sleep(0.01)
        await a.renew_all()
        assert json.loads(store.data[LEASE_PREFIX + "attach:vs:f"])["expires_at"] > before
        assert a.holds("attach:vs:f")

    asyncio.run(scenario())


def test_a_lease_excludes_other_tasks_of_its_own_process():
    async def scenario():
        leases = Leases(DictStore(), 10)
        assert await leases.acquire("attach:vs:f")
        assert not await leases.acquire("attach:vs:f")
        waiter = asyncio.create_task(leases.acquire_waiting("attach:vs:f"))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await leases.release("attach:vs:f")
        await asyncio.wait_for(waiter, 2)

    asyncio.run(scenario())


def test_a_waiting_acquire_gets_the_lease_once_released():
    async def scenario():
        store = DictStore()
        a, b = Leases(store, 10), Leases(store, 10)
        await a.acquire("attach:vs:f")
        waiter = asyncio.create_task(b.acquire_waiting("attach:vs:f"))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await a.release("attach:vs:f")
        await asyncio.wait_for(waiter, 2)
        assert b.holds("attach:vs:f")

    asyncio.run(scenario())


def test_clear_all_removes_leases_of_dead_processes():
    async def scenario():
        store = DictStore()
        await Leases(store, 10).acquire("batch:1")
        await Leases(store, 10).clear_all()
        assert await Leases(store, 10).acquire("batch:1")

    asyncio.run(scenario())
