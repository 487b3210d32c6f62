"""The pure parts of the search options: option parsing, explanations that recompute fused scores, one hit per file."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from llama_stack_api.vector_io.models import OpenAISearchVectorStoreRequest

from llama_stack_milvus.vector_io.explain import explanation, leg_positions, with_rerank
from llama_stack_milvus.vector_io.fusion import reciprocal_rank_fusion, weighted_fusion
from llama_stack_milvus.vector_io.index import _best_of_each_file
from llama_stack_milvus.vector_io.schema import DYNAMIC_LAYOUT, JSON_FIELD_LAYOUT
from llama_stack_milvus.vector_io.search_options import (
    SearchOptions,
    accept_extra_search_fields,
    parse_search_options,
)


def test_options_parse_and_default_to_off() -> None:
    assert parse_search_options(None) == SearchOptions()
    assert parse_search_options({"explain": True, "group_by_file": False}) == SearchOptions(explain=True)


@pytest.mark.parametrize(
    "extra,named",
    [({"explian": True}, "explian"), ({"explain": "yes"}, "explain"), ({"group_by_file": 1}, "group_by_file")],
)
def test_a_bad_option_is_refused_naming_it(extra, named) -> None:
    with pytest.raises(ValueError, match=named):
        parse_search_options(extra)


def test_the_request_model_keeps_extra_fields() -> None:
    accept_extra_search_fields()
    request = OpenAISearchVectorStoreRequest.model_validate({"query": "q", "explain": True})
    assert request.model_extra == {"explain": True}
    assert request.model_copy().model_extra == {"explain": True}  # the router forwards a copy


def recompute(parts: dict) -> float:
    vector, keyword, fusion = parts["vector"], parts["keyword"], parts["fusion"]
    if fusion["ranker"] == "rrf":
        k = fusion["k"]
        return sum(1 / (k + leg["rank"]) for leg in (vector, keyword) if leg) / (2 / (k + 1))
    alpha = fusion["alpha"]
    dense = alpha * min(max(vector["cosine"], 0.0), 1.0) if vector else 0.0
    return dense + ((1 - alpha) * keyword["bm25"] / fusion["bm25_max"] if keyword else 0.0)


row_ids = st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=10)


@given(row_ids, row_ids, st.floats(1, 200), st.floats(0, 1), st.randoms())
def test_explanations_recompute_both_fusions(vector_ids, keyword_ids, k, alpha, rnd) -> None:
    vector = sorted(((i, rnd.uniform(-1, 1)) for i in vector_ids), key=lambda hit: -hit[1])
    keyword = sorted(((i, rnd.uniform(0.1, 20)) for i in keyword_ids), key=lambda hit: -hit[1])
    best = max((score for _, score in keyword), default=0.0)
    for fused, fusion in (
        (reciprocal_rank_fusion(vector, keyword, k), {"ranker": "rrf", "k": k}),
        (weighted_fusion(vector, keyword, alpha), {"ranker": "weighted", "alpha": alpha, "bm25_max": best}),
    ):
        for row_id, score in fused:
            parts = explanation("hybrid", row_id, score, 10, leg_positions(vector), leg_positions(keyword), fusion)
            assert recompute(parts) == pytest.approx(score, abs=1e-12)
            assert parts["vector"] or parts["keyword"]


def test_single_leg_explanation_and_rerank() -> None:
    parts = explanation("vector", "b", 0.5, 2, leg_positions([("a", 0.9), ("b", 0.5)]), None, None)
    assert parts == {
        "mode": "vector",
        "vector": {"cosine": 0.5, "rank": 2},
        "keyword": None,
        "depth": 2,
        "fusion": None,
        "score": 0.5,
    }
    reranked = with_rerank(parts, "m", 3.0)
    assert reranked["score"] == reranked["rerank"]["score"] == 3.0
    assert reranked["retrieval_score"] == 0.5


@pytest.mark.parametrize("layout", [DYNAMIC_LAYOUT, JSON_FIELD_LAYOUT])
def test_best_of_each_file_keeps_the_first_hit_of_each_file(layout) -> None:
    files = {"r1": "f1", "r2": "f1", "r3": "f2", "r4": None, "r5": "f2", "r6": None}
    entities = {row: layout.columns({"document_id": f} if f else {}) for row, f in files.items()}
    hits = [(row, 1.0 - i / 10) for i, row in enumerate(files)]
    assert _best_of_each_file(hits, entities, layout) == [("r1", 1.0), ("r3", 0.8), ("r4", 0.7), ("r6", 0.5)]


def test_a_quote_is_the_sentence_where_the_query_words_meet() -> None:
    from llama_stack_milvus.vector_io.quote import best_quote

    text = "Python frees memory.\nIt uses reference counting. The garbage collector breaks reference cycles!\n\nEnd"
    start, end = best_quote(text, "How does the garbage collector work?")
    assert text[start:end] == "The garbage collector breaks reference cycles!"
    assert best_quote(text, "zebra savanna") is None
    assert best_quote("", "memory") is None
