"""Milvus Lite 3.x's BM25 scoring on numpy arrays, same numbers, same order.

Milvus Lite 3.x is Python: its keyword search (SparseInvertedIndex.search) walks every posting of every query term
in a Python loop, one dict update per posting: about two thirds of a keyword search on 9,280 pyfaq passages, and
growing with the store (docs/performance.md, "Where a hybrid search's time goes"). `install()` replaces that method
with one that keeps each queried term's postings as arrays (document ids and the BM25 term weight, which only
depends on the index as built: 8 bytes a posting, beside the ~90 of Lite's own tuples) and adds them up with numpy.
It repeats the original's float32 arithmetic operation for operation (NumPy 2 turns Python floats into float32
beside float32 values) and its tie order (first scored first), so results are identical: ids, order and scores
(tests/integration/test_lite_bm25.py compares both on real text). Nothing else of Milvus Lite changes; where the
installed Milvus Lite or NumPy is not the one this repeats, Lite keeps its own scorer.
"""

import math
from typing import Any

import numpy as np
from llama_stack.log import get_logger

logger = get_logger(name=__name__, category="vector_io::milvus")

_ATTRIBUTES = ("k1", "b", "doc_count", "avgdl", "_posting_lists", "_df", "_doc_lengths")


def install() -> bool:
    """Replaces SparseInvertedIndex.search (once per process); False where this Milvus Lite is not the one expected."""
    try:
        from milvus_lite.index.sparse_common import empty_results, validate_mask
        from milvus_lite.index.sparse_inverted import SparseInvertedIndex
    except ImportError:
        return False
    if getattr(SparseInvertedIndex.search, "numpy_postings", False):
        return True
    probe = SparseInvertedIndex()
    # NumPy 1 computes Python float x float32 in float64: the scores would differ in their last digits.
    if int(np.__version__.split(".")[0]) < 2 or not all(hasattr(probe, name) for name in _ATTRIBUTES):
        logger.warning("Milvus Lite's BM25 index or NumPy is not what lite_bm25 repeats: Lite keeps its slower scorer")
        return False

    def search(
        self: Any, query_sparse_vectors: list[dict[int, float]], top_k: int, valid_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        valid_mask = validate_mask(valid_mask, len(self._doc_lengths))
        all_ids, all_dists = empty_results(len(query_sparse_vectors), top_k)
        if self.doc_count == 0:
            return all_ids, all_dists
        for qi, query_terms in enumerate(query_sparse_vectors):
            picked, scores = _best(self, query_terms, valid_mask, top_k)
            all_ids[qi, : len(picked)] = picked
            all_dists[qi, : len(picked)] = -scores[picked]
        return all_ids, all_dists

    search.numpy_postings = True  # type: ignore[attr-defined]
    search.original = SparseInvertedIndex.search  # type: ignore[attr-defined]  # what the tests compare with
    SparseInvertedIndex.search = search
    return True


def _postings(index: Any, term: int) -> tuple[np.ndarray, np.ndarray]:
    """A term's document ids and their BM25 term weights tf*(k1+1) / (tf + k1*(1-b+b*dl/avgdl)), computed once per
    built index (build() makes a new posting dict, which drops them)."""
    cache = index.__dict__.get("_numpy_postings")
    if cache is None or cache[0] is not index._posting_lists:
        cache = index.__dict__["_numpy_postings"] = (index._posting_lists, {})
    found = cache[1].get(term)
    if found is None:
        posting = index._posting_lists[term]
        ids = np.fromiter((local_id for local_id, _ in posting), dtype=np.int32, count=len(posting))
        tf = np.fromiter((tf for _, tf in posting), dtype=np.float64, count=len(posting))
        k1, b = index.k1, index.b
        avgdl = index.avgdl if index.avgdl > 0 else 1.0
        dl = index._doc_lengths[ids]
        # As the original evaluates it per posting: Python floats beside float32 become float32 (NumPy 2, NEP 50).
        denominator = tf.astype(np.float32) + np.float32(k1) * (
            np.float32(1.0 - b) + np.float32(b) * dl / np.float32(avgdl)
        )
        weights = (tf * (k1 + 1.0)).astype(np.float32) / denominator
        found = cache[1][term] = (ids, weights)
    return found


def _best(
    index: Any, query_terms: dict[int, float], valid_mask: np.ndarray | None, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top_k documents in the original's order, and every document's score."""
    scores = np.zeros(len(index._doc_lengths), dtype=np.float32)
    first = np.full(len(index._doc_lengths), -1, dtype=np.int64)
    for position, (term, query_weight) in enumerate(query_terms.items()):
        if not index._posting_lists.get(term):
            continue
        df = index._df[term]
        idf = math.log((index.doc_count - df + 0.5) / (df + 0.5) + 1.0)
        ids, weights = _postings(index, term)
        if valid_mask is not None:
            keep = valid_mask[ids]
            ids, weights = ids[keep], weights[keep]
        # Postings hold each document once: a fancy-indexed += adds once per id.
        scores[ids] += np.float32(idf) * weights * np.float32(query_weight)
        unseen = ids[first[ids] < 0]
        first[unseen] = position
    scored = np.flatnonzero(first >= 0)
    if len(scored) > top_k > 0:
        # Only documents scoring at least the k-th best can be in the top k (ties included).
        kth = np.partition(scores[scored], len(scored) - top_k)[len(scored) - top_k]
        scored = scored[scores[scored] >= kth]
    # The original sorts documents by score, descending, stably: ties stay in the order they were first scored in
    # (query term by query term, each posting list in id order).
    order = np.lexsort((scored, first[scored], -scores[scored]))
    return scored[order][:top_k], scores
