"""scripts/bench/search.py without running it: the run configs of the built-in alternatives are ones Llama Stack
accepts, and its table says why a system has no numbers instead of comparing against a failure."""

import os
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


def entry(p50: float, answered: int, **more) -> dict:
    return {"queries": 10, "p50_ms": p50, "p95_ms": p50 * 2, "mean_hits": answered, "answered": answered} | more


def test_table_gives_ratios_only_against_modes_that_answered_every_query():
    unsupported = "Keyword search is not supported - underlying DB FAISS does not support this search mode"
    results = {
        "sizes": {
            "10000": {
                "builtin": {"error": "RuntimeError: server did not start"},
                "faiss": {
                    "vector": entry(40.0, 10),
                    "keyword": entry(8.0, 0, errors="every query answered with NO results", logged=unsupported),
                },
                "sqlite-vec": {
                    "vector": entry(80.0, 10),
                    "keyword": entry(5.0, 3, logged='fts5: syntax error near "?"'),
                },
                "ours": {"insert_s": 9.7, "settle_s": 11.0, "vector": entry(20.0, 10), "keyword": entry(16.0, 10)},
                "raw pymilvus": {"vector": entry(10.0, 10), "keyword": entry(8.0, 10)},
            }
        }
    }
    text = search.table(results)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()}
    # mode | builtin | faiss | sqlite-vec | ours | raw | ours/builtin | ours/faiss | ours/sqlite-vec | ours/raw
    vector, keyword = rows["vector"], rows["keyword"]
    assert vector[1] == keyword[1] == "RuntimeError: server did not start"
    assert vector[6:] == ["-", "0.50", "0.25", "2.00 |"]
    assert keyword[2:4] == ["8.0 / 16.0 (no results)", "5.0 / 10.0 (results for 3 of 10)"]
    assert keyword[6:] == ["-", "-", "-", "2.00 |"]
    assert f"faiss (keyword): every query answered with NO results; the server logged: {unsupported}" in text
    assert 'sqlite-vec (keyword): the server logged: fts5: syntax error near "?"' in text


def test_a_system_that_cannot_run_here_says_why():
    results = {"sizes": {"10000": {"sqlite-vec": {"skipped": "no extensions"}, "ours": {"vector": entry(20.0, 10)}}}}
    text = search.table(results)
    assert "| vector | - | - | no extensions | 20.0 / 40.0 |" in text
    assert "sqlite-vec: skipped: no extensions" in text


def test_sqlite_vec_runs_here_or_says_why():
    try:
        env, note = search.sqlite_vec_env()
    except search.Skipped as reason:
        assert "sqlite" in str(reason)
        return
    if env:  # the stand-in: its sitecustomize must come first on the server's path
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(search.PYSQLITE3_SHIM)
        assert "cannot load extensions" in note


def test_a_swallowed_search_error_is_read_from_the_wrapped_console_log():
    log = (
        "ERROR    2026-12-01T19:12:43.122202Z  llama_stack.providers.utils.memory.openai_vector_store_mixin:791 Error"
        ' searching  \n         vector store   category=providers::utils error=fts5: syntax error near "?"      \n'
        "         vector_store_id=vs_1\n"
        "INFO     2026-12-01T19:12:43.2Z  uvicorn.access: 127.0.0.1 POST /v1/vector_stores/x/search 200\n"
    )
    assert search.logged_error(log) == 'fts5: syntax error near "?"'
    assert search.logged_error("INFO 2026-12-01T19:12:43Z nothing went wrong\n") is None


class LogFile:
    """The two methods timed() reads of a StackServer, on a plain file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def log_size(self) -> int:
        return self.path.stat().st_size

    def log_since(self, offset: int) -> str:
        return self.path.read_text()[offset:]


def test_modes_take_turns_query_by_query_and_keep_their_own_errors(tmp_path):
    log = LogFile(tmp_path / "server.log")
    calls = []

    def mode(name: str, found: int, fails: bool = False):
        def search(query: str) -> int:
            calls.append((name, query))
            if fails:
                raise RuntimeError(f"{name} broke")
            if not found:
                with log.path.open("a") as f:
                    f.write(f"ERROR 2026-12-02T00:00Z Error searching vector store category=x error={name} said no\n")
            return found

        return search

    searches = {"vector": mode("vector", 10), "keyword": mode("keyword", 0), "hybrid": mode("hybrid", 10, fails=True)}
    results = search.timed(["q0", "q1", "q2", "q3"], searches, budget_s=60, server=log)

    timed_calls = calls[3:]  # after one warm-up per mode
    assert [name for name, _ in timed_calls[:9]] == [
        "vector", "keyword", "hybrid", "keyword", "hybrid", "vector", "hybrid", "vector", "keyword"
    ]  # fmt: skip
    assert [query for _, query in timed_calls] == [q for q in ("q0", "q1", "q2", "q3") for _ in range(3)]
    assert results["vector"]["answered"] == 4 and "logged" not in results["vector"]
    assert results["keyword"]["answered"] == 0 and results["keyword"]["logged"] == "keyword said no"
    assert results["hybrid"]["errors"] == "4 failed: RuntimeError: hybrid broke" and "p50_ms" not in results["hybrid"]


def test_a_spent_budget_still_times_the_minimum_number_of_queries():
    calls = []
    queries = [f"q{n}" for n in range(search.MIN_QUERIES + 5)]
    searches = {name: (lambda query, name=name: calls.append(name) or 1) for name in ("vector", "keyword")}
    results = search.timed(queries, searches, budget_s=0)
    assert results["vector"]["queries"] == results["keyword"]["queries"] == search.MIN_QUERIES
    assert len(calls) == 2 * (1 + search.MIN_QUERIES)  # a warm-up and MIN_QUERIES timed searches per mode
