"""EmbeddingBatcher: concurrent requests share encode calls and each gets its own rows back, in order."""

import asyncio

import numpy as np
import pytest

from llama_stack_milvus.embeddings.batcher import EmbeddingBatcher


class RecordingEncoder:
    """Encodes a text as [len(text), position in its call] so a test can see what was merged."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError(f"cannot encode {self.fail_on!r}")
        return np.array([[len(text), i] for i, text in enumerate(texts)], dtype=np.float32)


async def test_concurrent_requests_are_merged_and_answered_in_order():
    encoder = RecordingEncoder()
    batcher = EmbeddingBatcher(encoder)
    requests = [[f"{n}-{'x' * k}" for k in range(n + 1)] for n in range(8)]
    answers = await asyncio.gather(*(batcher.embed(texts) for texts in requests))
    for texts, vectors in zip(requests, answers, strict=True):
        assert vectors[:, 0].tolist() == [len(text) for text in texts]
    # All eight were waiting when the worker first ran: one encode call.
    assert len(encoder.calls) == 1
    assert sorted(text for call in encoder.calls for text in call) == sorted(t for texts in requests for t in texts)


async def test_a_call_never_exceeds_the_limit_unless_one_request_does():
    encoder = RecordingEncoder()
    batcher = EmbeddingBatcher(encoder, max_texts_per_call=10)
    sizes = [1, 6, 6, 12, 3]
    answers = await asyncio.gather(*(batcher.embed([f"{size}"] * size) for size in sizes))
    assert [len(vectors) for vectors in answers] == sizes
    assert [len(call) for call in encoder.calls] == [7, 6, 12, 3]


async def test_an_encoder_error_reaches_every_request_of_that_call_and_the_next_call_works():
    encoder = RecordingEncoder(fail_on="poison")
    batcher = EmbeddingBatcher(encoder)
    assert (await batcher.embed(["warm"]))[0, 0] == 4
    merged = [asyncio.create_task(batcher.embed(texts)) for texts in (["a"], ["poison"], ["b", "c"])]
    for task in merged:
        with pytest.raises(RuntimeError, match="poison"):
            await task
    assert (await batcher.embed(["after"]))[0, 0] == 5


async def test_a_cancelled_request_does_not_disturb_the_others():
    encoder = RecordingEncoder()
    batcher = EmbeddingBatcher(encoder)
    first = asyncio.create_task(batcher.embed(["one"]))
    cancelled = asyncio.create_task(batcher.embed(["gone"]))
    kept = asyncio.create_task(batcher.embed(["kept"]))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert (await first)[0, 0] == 3
    assert (await kept)[0, 0] == 4
    assert all("gone" not in call for call in encoder.calls)


async def test_requests_arriving_during_an_encode_go_together_into_the_next_call():
    release = asyncio.Event()
    encoder = RecordingEncoder()
    loop = asyncio.get_running_loop()

    def slow_first_call(texts: list[str]) -> np.ndarray:
        if not encoder.calls:
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        return encoder(texts)

    batcher = EmbeddingBatcher(slow_first_call)
    first = asyncio.create_task(batcher.embed(["first"]))
    await asyncio.sleep(0.05)
    later = [asyncio.create_task(batcher.embed([f"later {n}"])) for n in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, *later)
    assert encoder.calls == [["first"], [f"later {n}" for n in range(5)]]
