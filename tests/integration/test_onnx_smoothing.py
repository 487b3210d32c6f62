"""The smoothed int8 export (the default embedding model): smoothing alone changes nothing in fp32, and the export
it yields is closer to fp32 than the plain int8 export on text it was not calibrated on."""

import numpy as np
import onnx
import pytest

from llama_stack_milvus.embeddings.encoder import OnnxEncoder
from llama_stack_milvus.embeddings.export import (
    MODEL_FILE,
    PLAIN_MODEL_ID,
    SMOOTH_MODEL_ID,
    TOKENIZER_FILE,
    _export_fp32,
    calibration_texts,
    ensure_onnx_model,
    packaged_model_dir,
    smooth,
)


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp32")
    _export_fp32(packaged_model_dir(), folder / MODEL_FILE)
    (folder / TOKENIZER_FILE).write_bytes((packaged_model_dir() / TOKENIZER_FILE).read_bytes())
    return folder


def test_calibration_text_ships_with_the_package():
    texts = calibration_texts()
    assert len(texts) >= 100
    assert all(len(text) >= 150 for text in texts)


def test_smoothing_is_exact_in_fp32(fp32_dir, tmp_path):
    texts = calibration_texts()
    smoothed = tmp_path / MODEL_FILE
    # Strong smoothing everywhere: the largest rescaling, still the same function.
    alphas = {"qkv": 1.0, "attention_out": 1.0, "ffn_up": 1.0, "ffn_down": 1.0}
    smooth(fp32_dir / MODEL_FILE, smoothed, fp32_dir / TOKENIZER_FILE, texts[:8], alphas)
    (tmp_path / TOKENIZER_FILE).write_bytes((fp32_dir / TOKENIZER_FILE).read_bytes())
    graph = onnx.load(str(smoothed)).graph
    # One Mul per distinct MatMul input: query, key and value share theirs; 4 per layer, 6 layers.
    assert sum(node.op_type == "Mul" and node.output[0].endswith("_smoothed") for node in graph.node) == 24
    before = OnnxEncoder(fp32_dir, intra_op_threads=1).token_states(texts[8:16])
    after = OnnxEncoder(tmp_path, intra_op_threads=1).token_states(texts[8:16])
    for plain, smoothed_states in zip(before, after, strict=True):
        assert np.allclose(smoothed_states, plain, atol=1e-5), np.abs(smoothed_states - plain).max()


def test_the_smoothed_export_is_closer_to_fp32_than_the_plain_one(fp32_dir):
    # Odd passages: the export calibrates on all of them, so this checks the export step end to end; the choice of
    # alpha was made on the held-out half (scripts/bench/smoothing.py).
    texts = calibration_texts()[1::2]
    reference = OnnxEncoder(fp32_dir, intra_op_threads=2).encode(texts)
    cosine = {
        model_id: np.sum(OnnxEncoder(ensure_onnx_model(model_id), intra_op_threads=2).encode(texts) * reference, 1)
        for model_id in (PLAIN_MODEL_ID, SMOOTH_MODEL_ID)
    }
    assert cosine[SMOOTH_MODEL_ID].mean() > 0.998, cosine[SMOOTH_MODEL_ID].mean()
    assert 1 - cosine[SMOOTH_MODEL_ID].mean() < (1 - cosine[PLAIN_MODEL_ID].mean()) / 2, {
        m: c.mean() for m, c in cosine.items()
    }
    assert cosine[SMOOTH_MODEL_ID].min() > cosine[PLAIN_MODEL_ID].min()


def test_exports_are_separate_and_unknown_ids_are_refused():
    assert ensure_onnx_model(SMOOTH_MODEL_ID) != ensure_onnx_model(PLAIN_MODEL_ID)
    assert ensure_onnx_model() == ensure_onnx_model(SMOOTH_MODEL_ID)
    with pytest.raises(ValueError, match="all-MiniLM-L12-v2"):
        ensure_onnx_model("all-MiniLM-L12-v2")


async def test_the_provider_lists_both_exports_and_builds_only_the_one_used(tmp_path, monkeypatch):
    from llama_stack_api import OpenAIEmbeddingsRequestWithExtraBody

    from llama_stack_milvus.embeddings.config import OnnxEmbeddingsConfig
    from llama_stack_milvus.embeddings.impl import OnnxEmbeddingsImpl

    monkeypatch.setenv("LLAMA_STACK_MILVUS_CACHE", str(tmp_path))
    impl = OnnxEmbeddingsImpl(OnnxEmbeddingsConfig())
    impl.__provider_id__ = "onnx"
    assert [model.identifier for model in await impl.list_models()] == [SMOOTH_MODEL_ID, PLAIN_MODEL_ID]
    # A stack whose stores all use the plain export (made before the smoothed one existed) never builds the other.
    response = await impl.openai_embeddings(OpenAIEmbeddingsRequestWithExtraBody(model=PLAIN_MODEL_ID, input="a b"))
    assert len(response.data[0].embedding) == 384
    assert [path.name.rsplit("-", 1)[0] for path in (tmp_path / "onnx").iterdir()] == [PLAIN_MODEL_ID]
