"""Explained scores: the evidence behind each hit's score, asked for with `explain: true` on a search.

One explanation per hit (a JSON object, in the hit's content[0].metadata["explanation"]):
- `mode`: vector, keyword or hybrid;
- `vector`: {"cosine", "rank"} and `keyword`: {"bm25", "rank"}: the hit's score and 1-based rank in that leg's result
  list; null where the leg did not run (vector mode has no keyword leg) or the hit was not among its `depth` hits;
- `depth`: how many hits each leg fetched;
- `fusion`: how hybrid mode combined the legs (fusion.py), null in vector and keyword mode, where the score is the
  leg's own:
  rrf: {"ranker": "rrf", "k": k}: score = (1/(k + vector rank) + 1/(k + keyword rank)) / (2/(k + 1)), a missing
  leg adding 0;
  weighted: {"ranker": "weighted", "alpha": a, "bm25_max": m}: score = a * clip(cosine, 0, 1) + (1 - a) * bm25 / m,
  a missing leg adding 0 (m is the best BM25 score of the keyword leg);
- `retrieval_score`: the score before reranking, and `rerank`: {"model", "score"}, only for ranker "neural",
  whose score is the reranker's;
- `score`: the hit's final score.
"""

from typing import Any

from .fusion import Hits


def leg_positions(hits: Hits) -> dict[str, tuple[int, float]]:
    """row id -> (1-based rank, score) in one leg's result list."""
    return {row_id: (rank, score) for rank, (row_id, score) in enumerate(hits, start=1)}


def explanation(
    mode: str,
    row_id: str,
    score: float,
    depth: int,
    vector: dict[str, tuple[int, float]] | None,
    keyword: dict[str, tuple[int, float]] | None,
    fusion: dict[str, Any] | None,
) -> dict[str, Any]:
    def part(leg: dict[str, tuple[int, float]] | None, name: str) -> dict[str, Any] | None:
        if leg is None or row_id not in leg:
            return None
        rank, leg_score = leg[row_id]
        return {name: leg_score, "rank": rank}

    return {
        "mode": mode,
        "vector": part(vector, "cosine"),
        "keyword": part(keyword, "bm25"),
        "depth": depth,
        "fusion": fusion,
        "score": score,
    }


def with_rerank(explained: dict[str, Any], model: str, score: float) -> dict[str, Any]:
    rerank = {"model": model, "score": score}
    return {**explained, "retrieval_score": explained["score"], "rerank": rerank, "score": score}
