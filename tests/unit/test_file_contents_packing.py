"""A file's stored chunks keep their embeddings exactly (stored as base64 float64s), and chunks stored as the mixin
stores them (a JSON list of floats) load unchanged."""

import json

from llama_stack_milvus.vector_io.openai_store import packed, unpacked


def test_embeddings_come_back_bit_identical_through_json():
    embedding = [0.1, -1 / 3, 1e-300, -0.0, 2.5e10, 0.007812500000000001]
    chunk = {"content": "text", "chunk_id": "c1", "embedding": embedding, "metadata": {"k": [1.5]}}
    stored = json.dumps(packed(chunk))
    assert "0.333" not in stored  # not a list of numbers
    loaded = unpacked(json.loads(stored))
    assert loaded == chunk
    assert [x.hex() for x in loaded["embedding"]] == [x.hex() for x in embedding]


def test_chunks_stored_the_mixins_way_and_chunks_without_embeddings_pass_unchanged():
    mixins = {"content": "text", "chunk_id": "c1", "embedding": [0.25, 0.5]}
    assert unpacked(json.loads(json.dumps(mixins))) == mixins
    bare = {"content": "text", "chunk_id": "c2"}
    assert packed(bare) == bare
    assert unpacked(bare) == bare
