"""Fixtures that run a real `llama stack run` server from a distribution (milvus-embedded by default) on a free port."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from llama_stack_milvus_devtools import milvus
from llama_stack_milvus_devtools.stack import EMBEDDED_RUN_YAML, StackServer, offline_env

if TYPE_CHECKING:
    from llama_stack_milvus.inference.server import LlamaCppServer


@pytest.fixture(scope="session")
def server_env() -> dict[str, str]:
    """The environment for server processes: ours plus the offline model/tokenizer prerequisites, without the
    developer's remote inference keys or Milvus server (the remote tests say which one)."""
    return offline_env()


@pytest.fixture(scope="session")
def make_server(server_env, tmp_path_factory) -> Iterator[Callable[..., StackServer]]:
    """Factory: make_server() starts a server on a fresh data dir; every server is stopped at session end."""
    servers: list[StackServer] = []

    def make(name: str = "stack", run_yaml: Path = EMBEDDED_RUN_YAML, env: dict[str, str] | None = None) -> StackServer:
        """`env` is added to the server environment (e.g. MILVUS_URI for distributions/milvus-remote)."""
        server = StackServer(run_yaml, tmp_path_factory.mktemp(name), dict(server_env, **(env or {})))
        servers.append(server)
        try:
            server.start()
        except RuntimeError as exc:
            pytest.fail(str(exc))
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def stack_server(make_server) -> Iterator[StackServer]:
    """A running server for one test module, on its own data directory."""
    server = make_server("stack")
    yield server
    server.stop()


# ------------------------------------------------------------------------------------ real Milvus servers


@pytest.fixture(scope="session")
def measurements(tmp_path_factory) -> Iterator[dict[str, list]]:
    """Figures measured by the remote tests (server start times, outage detection, recovery): key -> values.

    Written at the end of the session to <pytest basetemp>/remote_measurements.json (CI shows no stdout).
    """
    data: dict[str, list] = {}
    yield data
    path = tmp_path_factory.getbasetemp() / "remote_measurements.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def milvus_factory(tmp_path_factory, measurements) -> Iterator[Callable[..., milvus.MilvusServer]]:
    """milvus_factory(kind) -> a running server ("lite" or "standalone") shared by the session;
    milvus_factory(kind, fresh=True) -> a new one on its own data dir, for tests that stop or restart it
    (they stop it themselves; whatever still runs is stopped at session end)."""
    shared: dict[str, milvus.MilvusServer] = {}
    started: list[milvus.MilvusServer] = []

    def get(kind: str, fresh: bool = False) -> milvus.MilvusServer:
        if not fresh and kind in shared:
            return shared[kind]
        server = milvus.start_server(kind, tmp_path_factory.mktemp(f"milvus-{kind}"))
        measurements.setdefault(f"milvus_{kind}_start_s", []).append(server.started_in_seconds)
        started.append(server)
        if not fresh:
            shared[kind] = server
        return server

    yield get
    for server in started:
        milvus.stop_server(server)


@pytest.fixture(scope="session")
def reliability_figures(tmp_path_factory) -> Iterator[dict]:
    """Figures from the reliability suite (crash, load): written to <pytest basetemp>/reliability_measurements.json."""
    data: dict = {}
    yield data
    path = tmp_path_factory.getbasetemp() / "reliability_measurements.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------ the local LLM


@pytest.fixture(scope="session")
def llama_cpp() -> Iterator["LlamaCppServer"]:
    """A llama.cpp server with SmolLM2-135M-Instruct on a free port: the stand-in for vLLM, Together, DeepSeek."""
    from llama_stack_milvus.inference.server import start_server

    server = start_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rag_server(make_server) -> StackServer:
    """One milvus-embedded server (with its own local LLM) shared by the local-LLM, CLI and seed 1 tests."""
    return make_server("rag")
