"""Provider configs reject what would fail later, and never print the token."""

import pytest
from pydantic import ValidationError

from llama_stack_milvus.provider import get_provider_spec
from llama_stack_milvus.vector_io.config import InlineMilvusConfig, RemoteMilvusConfig

PERSISTENCE = {"namespace": "vector_io::milvus", "backend": "kv_default"}


def test_inline_config_parses_a_run_yaml_entry() -> None:
    config = InlineMilvusConfig(db_path="~/x/milvus.db", persistence=PERSISTENCE)
    assert config.index_type == "auto" and config.consistency_level == "Strong"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"db_path": "  "}, "db_path must name a file"),
        ({"db_path": "http://localhost:19530"}, "use remote::milvus"),
        ({"db_path": "/x", "index_type": "DISKANN"}, "index_type"),
        ({"db_path": "/x", "consistency_level": "Sometimes"}, "consistency_level"),
        ({"db_path": "/x", "hnsw_m": 1000}, "hnsw_m"),
        ({"db_path": "/x", "keyword_analyzer": "french"}, "keyword_analyzer"),
    ],
)
def test_inline_config_errors_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        InlineMilvusConfig(persistence=PERSISTENCE, **fields)


def test_remote_config_requires_a_uri_scheme_and_hides_the_token() -> None:
    with pytest.raises(ValidationError, match="uri must start with http"):
        RemoteMilvusConfig(uri="localhost:19530", persistence=PERSISTENCE)
    config = RemoteMilvusConfig(uri="http://localhost:19530", token="root:Milvus", persistence=PERSISTENCE)
    assert "root:Milvus" not in repr(config) and "root:Milvus" not in config.model_dump_json()
    assert config.token.get_secret_value() == "root:Milvus"


def test_provider_specs_replace_both_builtin_types_and_add_inference_providers() -> None:
    specs = {spec.provider_type: spec for spec in get_provider_spec()}
    assert set(specs) == {
        "inline::milvus",
        "remote::milvus",
        "inline::onnx-embeddings",
        "inline::rerank",
        "inline::llama-cpp",
    }
    assert specs["inline::milvus"].config_class.endswith("InlineMilvusConfig")
    assert specs["inline::onnx-embeddings"].api.value == "inference"
    assert specs["inline::rerank"].api.value == "inference"


@pytest.mark.parametrize(
    ("version", "bm25", "english"),
    [
        ("v2.3.5-lite", False, False),
        ("v2.4.13", False, False),
        ("v2.5.4", True, True),
        ("v2.6.0", True, True),
        # `milvus-lite server` is Milvus Lite 3.x: BM25 with the standard and jieba analysers only.
        ("milvus_lite-3.2.2", True, False),
    ],
)
def test_bm25_and_the_english_analyser_are_detected_from_the_server_version(
    version: str, bm25: bool, english: bool
) -> None:
    from llama_stack_milvus.vector_io.backend import capabilities_for_version

    capabilities = capabilities_for_version(version)
    assert capabilities.bm25 is bm25 and capabilities.english_analyzer is english


def test_keyword_analyzer_defaults_to_standard_and_reaches_the_remote_config() -> None:
    assert InlineMilvusConfig(db_path="/x", persistence=PERSISTENCE).keyword_analyzer == "standard"
    inline = InlineMilvusConfig(
        db_path="/x", uri="http://localhost:19530", keyword_analyzer="english", persistence=PERSISTENCE
    )
    assert inline.server_config().keyword_analyzer == "english"


@pytest.mark.parametrize(
    "version, grouping",
    [("v2.3.5-lite", False), ("v2.4.13", True), ("v2.5.4", True), ("milvus_lite-3.2.2", True)],
)
def test_grouping_search_is_detected_from_the_server_version(version: str, grouping: bool) -> None:
    from llama_stack_milvus.vector_io.backend import capabilities_for_version

    assert capabilities_for_version(version).grouping is grouping


def test_env_values_typed_as_numbers_stay_text() -> None:
    config = RemoteMilvusConfig(uri="http://localhost:19530", token=12345, db_name=2024, persistence=PERSISTENCE)
    assert config.token.get_secret_value() == "12345" and config.db_name == "2024"
