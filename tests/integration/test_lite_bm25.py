"""Our numpy BM25 scorer for Milvus Lite 3.x (vector_io/lite_bm25.py) returns exactly what Milvus Lite's own does."""

import argparse
import asyncio
import csv
import importlib.metadata
import inspect
import json
import sqlite3

import numpy as np
import pytest

from llama_stack_milvus.vector_io import lite_bm25

pytestmark = pytest.mark.skipif(
    not importlib.metadata.version("milvus-lite").startswith("3."), reason="Milvus Lite 2.5 scores BM25 natively"
)

# Real documentation text available offline everywhere: paragraphs of standard-library docstrings.
PARAGRAPHS = [
    paragraph
    for module in (argparse, asyncio, csv, json, sqlite3, inspect)
    for paragraph in (inspect.getdoc(module) or "").split("\n\n")
    if paragraph.strip()
] + [inspect.getdoc(function) or "" for function in (json.dumps, json.loads, csv.reader, sqlite3.connect)]
QUERIES = [
    "How do I parse command line arguments?",
    "json encoder for python objects",
    "the the the of a",  # common words: long posting lists, many ties
    "sqlite3 connect database file",
    "csv reader dialect delimiter quote quote",  # a repeated term: query weight 2
    "zzzz unknown words only",
    "",
]


@pytest.fixture(scope="module")
def scorers():
    from milvus_lite.analyzer.factory import create_analyzer
    from milvus_lite.analyzer.sparse import compute_tf
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex

    analyzer = create_analyzer({"tokenizer": "standard"})
    documents = [compute_tf(analyzer.analyze(text)) for text in PARAGRAPHS] + [{}]  # and one empty document
    queries = [compute_tf(analyzer.analyze(text)) for text in QUERIES]
    lite_bm25.install()
    original = SparseInvertedIndex.search.original
    index = SparseInvertedIndex()
    index.build(documents)
    return index, queries, original


@pytest.mark.parametrize("top_k", [1, 3, 10, 1000])
@pytest.mark.parametrize("masked", [False, True])
def test_same_ids_order_and_scores_as_milvus_lite(scorers, top_k: int, masked: bool) -> None:
    index, queries, original = scorers
    mask = np.arange(len(index._doc_lengths)) % 3 != 1 if masked else None
    ours = index.search(queries, top_k, valid_mask=mask)
    theirs = original(index, queries, top_k, valid_mask=mask)
    assert (ours[0] >= 0).sum() > 0
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])


def test_a_rebuilt_index_scores_its_new_postings(scorers) -> None:
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex

    _, queries, original = scorers
    index = SparseInvertedIndex()
    index.build([{1: 1.0}, {2: 3.0}])
    index.search([{1: 1.0}], 5)
    index.build([{2: 1.0}, {1: 2.0, 2: 1.0}])
    ours = index.search([{1: 1.0}, {2: 1.0}], 5)
    theirs = original(index, [{1: 1.0}, {2: 1.0}], 5)
    assert list(ours[0][0][:1]) == [1]
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
