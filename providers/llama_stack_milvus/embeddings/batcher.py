"""Merges concurrent embedding requests into one encode call.

The stack embeds each attached file with its own request; files of a batch are attached a few at a time. Encoding
them together keeps one model busy with full, length-sorted batches instead of several half-empty ones fighting
for two cores.
"""

import asyncio
from collections.abc import Callable

import numpy as np


class EmbeddingBatcher:
    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_texts_per_call: int = 2048) -> None:
        self._encode = encode
        self._max_texts_per_call = max_texts_per_call
        self._pending: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, texts: list[str]) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            taken: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
            count = 0
            while self._pending and (not taken or count + len(self._pending[0][0]) <= self._max_texts_per_call):
                request = self._pending.pop(0)
                if not request[1].cancelled():
                    taken.append(request)
                    count += len(request[0])
            if not taken:
                continue
            texts = [text for request_texts, _ in taken for text in request_texts]
            try:
                vectors = await asyncio.to_thread(self._encode, texts)
            except Exception as error:
                for _, future in taken:
                    if not future.done():
                        future.set_exception(error)
                continue
            offset = 0
            for request_texts, future in taken:
                if not future.done():
                    future.set_result(vectors[offset : offset + len(request_texts)])
                offset += len(request_texts)
