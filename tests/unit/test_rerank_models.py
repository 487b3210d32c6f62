"""inline::rerank's models without a server: what a CrossEncoder must be, and what the default model ranks first."""

import asyncio

import pytest
from llama_stack_api import Model, ModelType
from llama_stack_api.inference import RerankRequest

from llama_stack_milvus.embeddings.export import packaged_model_dir
from llama_stack_milvus.errors import InvalidRequestError
from llama_stack_milvus.rerank.config import RerankConfig
from llama_stack_milvus.rerank.impl import DEFAULT_MODEL_ID, RerankImpl


def provider() -> RerankImpl:
    impl = RerankImpl(RerankConfig())
    impl.__provider_id__ = "rerank"
    return impl


def test_a_cross_encoder_with_several_labels_is_refused_naming_it(tmp_path):
    from sentence_transformers import CrossEncoder

    path = tmp_path / "two-labels"
    CrossEncoder(str(packaged_model_dir()), num_labels=2, device="cpu").save(str(path))
    model = Model(
        identifier=f"rerank/{path}", provider_resource_id=str(path), provider_id="rerank", model_type=ModelType.rerank
    )
    with pytest.raises(InvalidRequestError, match="2 output labels") as refused:
        asyncio.run(provider().register_model(model))
    assert str(path) in str(refused.value)


def test_a_model_registered_as_another_type_is_refused():
    model = Model(identifier="rerank/x", provider_resource_id="x", provider_id="rerank", model_type=ModelType.llm)
    with pytest.raises(InvalidRequestError, match="rerank models only"):
        asyncio.run(provider().register_model(model))


def test_the_default_model_ranks_the_answer_first():
    passages = [
        "Lists are mutable sequences, typically used to store collections of homogeneous items.",
        "To copy a file, use shutil.copyfile() or shutil.copy(); they copy the contents and the permissions.",
        "The global interpreter lock lets only one thread execute Python bytecode at a time.",
    ]
    request = RerankRequest(model=DEFAULT_MODEL_ID, query="How do I copy a file in Python?", items=passages)
    ranked = asyncio.run(provider().rerank(request)).data
    assert [entry.index for entry in ranked][0] == 1
    assert [entry.relevance_score for entry in ranked] == sorted((e.relevance_score for e in ranked), reverse=True)
