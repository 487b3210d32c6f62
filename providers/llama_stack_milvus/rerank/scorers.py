"""The relevance scores of the rerank models: what each model says about (query, passage) pairs.

The offline default needs no weights beyond what ships: all-MiniLM-L6-v2 (the embedding model, as our int8 ONNX
export) read as a late-interaction model. A query word piece is matched to its closest passage word piece (ColBERT's
MaxSim), and the mean of those matches is averaged with the pooled cosine that dense retrieval uses. Neither half
was trained for this: docs/performance.md has what it does to nDCG@10 and latency (scripts/bench/quality.py).
"""

from pathlib import Path
from typing import Protocol

import numpy as np


class Scorer(Protocol):
    def scores(self, query: str, passages: list[str]) -> list[float]: ...


def _unit_rows(states: np.ndarray) -> np.ndarray:
    return states / np.maximum(np.linalg.norm(states, axis=1, keepdims=True), 1e-12)


class LateInteractionScorer:
    def __init__(self, model_dir: Path, intra_op_threads: int = 0) -> None:
        from ..embeddings.encoder import OnnxEncoder

        self.encoder = OnnxEncoder(model_dir, intra_op_threads)

    def scores(self, query: str, passages: list[str]) -> list[float]:
        query_states, *passage_states = self.encoder.token_states([query, *passages])
        query_tokens = _unit_rows(query_states)
        query_pooled = _unit_rows(query_states.mean(axis=0, keepdims=True))[0]
        result = []
        for states in passage_states:
            max_sim = float((query_tokens @ _unit_rows(states).T).max(axis=1).mean())
            cosine = float(_unit_rows(states.mean(axis=0, keepdims=True))[0] @ query_pooled)
            result.append((max_sim + cosine) / 2)
        return result


class CrossEncoderScorer:
    """A sentence-transformers CrossEncoder: a local folder, or a model id found in the local Hugging Face cache (the
    distributions set HF_HUB_OFFLINE, so nothing is downloaded)."""

    def __init__(self, name: str) -> None:
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(name, device="cpu")
        # With several labels (e.g. NLI models) no one of them is "relevance".
        if self.model.num_labels != 1:
            raise ValueError(f"{name} has {self.model.num_labels} output labels; a reranker has exactly one")

    def scores(self, query: str, passages: list[str]) -> list[float]:
        predicted = self.model.predict([(query, passage) for passage in passages], convert_to_numpy=True)
        return np.asarray(predicted, dtype=np.float64).reshape(len(passages)).tolist()
