"""Hybrid fusion puts scores on a 0..1 scale where 1 means best in both signals."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llama_stack_milvus.vector_io.fusion import reciprocal_rank_fusion, weighted_fusion

ids = st.lists(st.text(min_size=1, max_size=4), unique=True, max_size=20)


def ranked(row_ids: list[str], scores: st.SearchStrategy) -> list[tuple[str, float]]:
    return [(row_id, score) for row_id, score in zip(row_ids, scores, strict=False)]


@given(ids, ids, st.floats(1, 200))
def test_rrf_scores_lie_in_unit_interval_and_are_sorted(vector_ids, keyword_ids, k) -> None:
    fused = reciprocal_rank_fusion([(i, 0.0) for i in vector_ids], [(i, 1.0) for i in keyword_ids], k)
    scores = [score for _, score in fused]
    assert all(0 < s <= 1 + 1e-12 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert {row_id for row_id, _ in fused} == set(vector_ids) | set(keyword_ids)


def test_rrf_first_in_both_lists_scores_one() -> None:
    fused = reciprocal_rank_fusion([("a", 0.9), ("b", 0.5)], [("a", 12.0), ("c", 3.0)], 60)
    assert fused[0] == ("a", pytest.approx(1.0))


@given(
    st.lists(st.tuples(st.text(min_size=1, max_size=3), st.floats(-1, 1)), max_size=10, unique_by=lambda x: x[0]),
    st.lists(st.tuples(st.text(min_size=1, max_size=3), st.floats(0.01, 50)), max_size=10, unique_by=lambda x: x[0]),
    st.floats(0, 1),
)
def test_weighted_scores_lie_in_unit_interval(vector_hits, keyword_hits, alpha) -> None:
    fused = weighted_fusion(vector_hits, keyword_hits, alpha)
    assert all(-1e-12 <= score <= 1 + 1e-12 for _, score in fused)


def test_weighted_alpha_one_is_clipped_cosine_and_zero_is_relative_bm25() -> None:
    vector_hits, keyword_hits = [("a", 0.8), ("b", -0.2)], [("b", 10.0), ("c", 5.0)]
    assert dict(weighted_fusion(vector_hits, keyword_hits, 1.0)) == {"a": 0.8, "b": 0.0, "c": 0.0}
    assert dict(weighted_fusion(vector_hits, keyword_hits, 0.0)) == {"a": 0.0, "b": 1.0, "c": 0.5}


def test_out_of_range_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="impact_factor"):
        reciprocal_rank_fusion([], [], 0)
    with pytest.raises(ValueError, match="alpha"):
        weighted_fusion([], [], 1.5)
