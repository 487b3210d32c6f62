"""Hybrid fusion of a vector and a keyword result list into one list scored in [0, 1].

Both rankers put hybrid scores on the same 0..1, larger-is-better scale as cosine similarity, so a
`score_threshold` reads the same in vector and hybrid mode:
- rrf: sum of 1/(k + rank) over both lists, divided by its maximum 2/(k + 1): 1.0 = first in both.
- weighted: alpha * cosine (clipped to 0..1) + (1 - alpha) * bm25 / best bm25 of this query.
"""

Hits = list[tuple[str, float]]


def reciprocal_rank_fusion(vector_hits: Hits, keyword_hits: Hits, k: float) -> Hits:
    if k <= 0:
        raise ValueError(f"ranking_options.impact_factor must be > 0, got {k}")
    fused: dict[str, float] = {}
    for hits in (vector_hits, keyword_hits):
        for rank, (row_id, _) in enumerate(hits, start=1):
            fused[row_id] = fused.get(row_id, 0.0) + 1.0 / (k + rank)
    best_possible = 2.0 / (k + 1)
    return _ranked({row_id: score / best_possible for row_id, score in fused.items()})


def weighted_fusion(vector_hits: Hits, keyword_hits: Hits, alpha: float) -> Hits:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"ranking_options.alpha must be between 0 and 1, got {alpha}")
    fused: dict[str, float] = {}
    for row_id, cosine in vector_hits:
        fused[row_id] = alpha * min(max(cosine, 0.0), 1.0)
    best_keyword = max((score for _, score in keyword_hits), default=0.0)
    if best_keyword > 0:
        for row_id, score in keyword_hits:
            fused[row_id] = fused.get(row_id, 0.0) + (1 - alpha) * score / best_keyword
    return _ranked(fused)


def _ranked(scores: dict[str, float]) -> Hits:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
