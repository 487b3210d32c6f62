"""scripts/bench/search.py without running it: the run configs of the built-in alternatives are ones Llama Stack
accepts, and its table says why a system has no numbers instead of comparing against a failure."""

import sys
from pathlib import Path

import pytest
import yaml
from llama_stack.core.datatypes import StackConfig
from llama_stack.core.distribution import get_provider_registry
from llama_stack.core.stack import replace_env_vars
from llama_stack.core.utils.dynamic import instantiate_class_type
from llama_stack_api import Api

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))

import _common as common  # noqa: E402
import search  # noqa: E402


@pytest.mark.parametrize("system", sorted(search.BUILTIN_VECTOR_IO))
def test_each_builtin_alternative_is_a_config_the_stack_accepts(system, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_STACK_MILVUS_DIR", str(tmp_path))
    path = common.run_yaml_without_module(tmp_path / "run.yaml", vector_io=search.BUILTIN_VECTOR_IO[system])
    config = StackConfig(**replace_env_vars(yaml.safe_load(path.read_text())))

    (provider,) = config.providers["vector_io"]
    assert provider.module is None  # the stock provider, not ours
    assert config.vector_stores.default_provider_id == provider.provider_id
    spec = get_provider_registry()[Api.vector_io][provider.provider_type]
    provider_config = instantiate_class_type(spec.config_class)(**provider.config)
    if system == "sqlite-vec":
        assert provider_config.db_path == f"{tmp_path}/sqlite_vec.db"
    assert all(p.module != common.MODULE for p in config.providers["inference"])


def entry(p50: float, hits: float, errors: str | None = None) -> dict:
    return {"queries": 10, "p50_ms": p50, "p95_ms": p50 * 2, "mean_hits": hits} | ({"errors": errors} if errors else {})


def test_table_gives_ratios_only_against_systems_that_found_results():
    no_results = "every query answered with NO results; the server logged: Keyword search is not supported"
    results = {
        "sizes": {
            "10000": {
                "builtin": {"error": "RuntimeError: server did not start"},
                "faiss": {"insert_s": 3.0, "vector": entry(40.0, 10), "keyword": entry(8.0, 0, no_results)},
                "sqlite-vec": {"skipped": "this Python's sqlite3 cannot load extensions"},
                "ours": {"insert_s": 2.0, "vector": entry(20.0, 10), "keyword": entry(16.0, 10)},
                "raw pymilvus": {"insert_s": 1.0, "vector": entry(10.0, 10), "keyword": entry(8.0, 10)},
            }
        }
    }
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in search.table(results).splitlines()}
    # mode | builtin | faiss | sqlite-vec | ours | raw | ours/builtin | ours/faiss | ours/sqlite-vec | ours/raw
    vector, keyword = rows["vector"], rows["keyword"]
    assert vector[1] == "RuntimeError: server did not start"
    assert vector[3] == keyword[3] == "this Python's sqlite3 cannot load extensions"
    assert vector[6:] == ["-", "0.50", "-", "2.00 |"]
    assert keyword[2] == "8.0 / 16.0 (no results)"
    assert keyword[6:] == ["-", "-", "-", "2.00 |"]
    text = search.table(results)
    assert f"faiss (keyword): {no_results}" in text
    assert "sqlite-vec: skipped: this Python's sqlite3 cannot load extensions" in text


def test_a_swallowed_search_error_is_read_from_the_wrapped_console_log():
    log = (
        "ERROR    2026-12-01T19:12:43.122202Z  llama_stack.providers.utils.memory.openai_vector_store_mixin:791 Error"
        ' searching  \n         vector store   category=providers::utils error=fts5: syntax error near "?"      \n'
        "INFO     2026-12-01T19:12:43.2Z  uvicorn.access: 127.0.0.1 POST /v1/vector_stores/x/search 200\n"
    )
    assert search.logged_error(log) == 'fts5: syntax error near "?"'
    assert search.logged_error("INFO 2026-12-01T19:12:43Z nothing went wrong\n") is None
