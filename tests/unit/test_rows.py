"""Row identity (what makes an upsert replace rather than duplicate) and the chunk <-> row mapping."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from llama_stack_api import ChunkMetadata, EmbeddedChunk

from llama_stack_milvus.vector_io.schema import (
    DYNAMIC_LAYOUT,
    JSON_FIELD_LAYOUT,
    MAX_CONTENT_BYTES,
    chunk_to_row,
    collection_name_for,
    row_id_for,
    row_to_chunk,
)


def make_chunk(chunk_id: str, document_id: str, text: str = "some text") -> EmbeddedChunk:
    return EmbeddedChunk(
        content=text,
        chunk_id=chunk_id,
        metadata={"document_id": document_id, "topic": "cats", "year": 2021},
        chunk_metadata=ChunkMetadata(chunk_id=chunk_id, document_id=document_id, chunk_window="0-3"),
        embedding=[0.1, 0.2, 0.3],
        embedding_model="m",
        embedding_dimension=3,
    )


def test_same_chunk_in_two_documents_gets_two_rows() -> None:
    # make_overlapped_chunks derives chunk ids from the text only: equal files share chunk ids.
    assert row_id_for("c1", "file-a") != row_id_for("c1", "file-b")
    assert row_id_for("c1", "file-a") == chunk_to_row(make_chunk("c1", "file-a"), DYNAMIC_LAYOUT)["row_id"]


def test_same_chunk_reinserted_keeps_its_row_id() -> None:
    assert (
        chunk_to_row(make_chunk("c1", "file-a"), DYNAMIC_LAYOUT)["row_id"]
        == chunk_to_row(make_chunk("c1", "file-a"), DYNAMIC_LAYOUT)["row_id"]
    )


@pytest.mark.parametrize("layout", [DYNAMIC_LAYOUT, JSON_FIELD_LAYOUT], ids=["dynamic", "json-field"])
def test_row_round_trip_restores_the_chunk(layout) -> None:
    chunk = make_chunk("c1", "file-a", "Cats purr.")
    chunk.metadata["content"] = "an attribute named like a column"
    restored = row_to_chunk(chunk_to_row(chunk, layout), layout)
    assert restored == chunk


def test_dynamic_layout_keeps_attributes_apart_from_the_columns() -> None:
    chunk = make_chunk("c1", "file-a", "Cats purr.")
    chunk.metadata.update({"content": "not the text", "vector": "not the embedding", "attr.x": 1})
    row = chunk_to_row(chunk, DYNAMIC_LAYOUT)
    assert row["content"] == "Cats purr." and row["vector"] == [0.1, 0.2, 0.3]
    assert row["attr.content"] == "not the text" and row["attr.attr.x"] == 1
    assert "attributes" not in row


def test_oversized_chunk_is_rejected_with_advice() -> None:
    with pytest.raises(ValueError, match="max_chunk_size_tokens"):
        chunk_to_row(make_chunk("c1", "file-a", "x" * (MAX_CONTENT_BYTES + 1)), DYNAMIC_LAYOUT)


def test_overlong_chunk_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="longer than"):
        row_id_for("c" * 600, "file-a")


@given(st.lists(st.text(min_size=1, max_size=60), unique=True, max_size=30))
def test_collection_names_are_valid_and_distinct(store_ids: list[str]) -> None:
    names = [collection_name_for(store_id) for store_id in store_ids]
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name) for name in names)
    assert len(set(names)) == len(names)
