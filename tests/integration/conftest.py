"""Fixtures that run a real `llama stack run` server from a distribution (milvus-embedded by default) on a free port."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_YAML = ROOT / "distributions" / "milvus-embedded" / "run.yaml"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20

# tests/data holds the document builder shared by the server tests; scripts/ has milvus_server.py.
sys.path.insert(0, str(ROOT / "tests" / "data"))
sys.path.insert(0, str(ROOT / "scripts"))

import milvus_server  # noqa: E402

if TYPE_CHECKING:
    from llama_stack_milvus.inference.server import LlamaCppServer


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StackServer:
    """One `llama stack run` process on a data directory; can be stopped and started again on the same data."""

    def __init__(self, data_dir: Path, env: dict[str, str], run_yaml: Path = RUN_YAML):
        self.data_dir = data_dir
        self.env = env
        self.run_yaml = run_yaml
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path = data_dir / "server.log"
        self.starts = 0
        self.start_seconds: list[float] = []  # how long each start took until /v1/health answered

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> None:
        assert self.process is None, "server already running"
        self.port = free_port()
        self.starts += 1
        started = time.monotonic()
        llama = Path(sys.executable).parent / "llama"
        with self.log_path.open("a") as log:
            log.write(f"\n===== start #{self.starts} on port {self.port} =====\n")
            log.flush()
            self.process = subprocess.Popen(
                [str(llama), "stack", "run", str(self.run_yaml.relative_to(ROOT)), "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                pytest.fail(f"llama stack server exited with {code} during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/v1/health", timeout=2).status_code == 200:
                    self.start_seconds.append(round(time.monotonic() - started, 2))
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"llama stack server not healthy after {START_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def server_env() -> dict[str, str]:
    """The environment for server processes: ours plus the offline model/tokenizer prerequisites."""
    from llama_stack_milvus.offline import ensure_embedding_model, ensure_tiktoken_cache

    tiktoken_dir = ensure_tiktoken_cache()
    ensure_embedding_model()
    env = dict(os.environ)
    env["TIKTOKEN_CACHE_DIR"] = str(tiktoken_dir)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    # No remote inference in these tests, even if the developer's shell has keys set.
    # Nor a Milvus server of the developer's: the remote tests say which one.
    for name in (
        "TOGETHER_API_KEY",
        "VLLM_URL",
        "LLAMA_STACK_PORT",
        "MILVUS_URI",
        "MILVUS_TOKEN",
        "MILVUS_DB_NAME",
        "MILVUS_COLLECTION_MODE",
        "TOGETHER_URL",
        "DEEPSEEK_API_KEY",
        "DEEPSEEK_URL",
        "VLLM_MODEL",
        "LLAMA_CPP_URL",
        "LLAMA_CPP_MODEL",
    ):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def make_server(server_env, tmp_path_factory) -> Iterator[Callable[..., StackServer]]:
    """Factory: make_server() starts a server on a fresh data dir; every server is stopped at session end."""
    servers: list[StackServer] = []

    def make(name: str = "stack", run_yaml: Path = RUN_YAML, env: dict[str, str] | None = None) -> StackServer:
        """`env` is added to the server environment (e.g. MILVUS_URI for distributions/milvus-remote)."""
        data_dir = tmp_path_factory.mktemp(name)
        server_env_for_this = dict(server_env, LLAMA_STACK_MILVUS_DIR=str(data_dir), **(env or {}))
        server = StackServer(data_dir, server_env_for_this, run_yaml)
        servers.append(server)
        server.start()
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
def milvus_factory(tmp_path_factory, measurements) -> Iterator[Callable[..., milvus_server.MilvusServer]]:
    """milvus_factory(kind) -> a running server ("lite" or "standalone") shared by the session;
    milvus_factory(kind, fresh=True) -> a new one on its own data dir, for tests that stop or restart it
    (they stop it themselves; whatever still runs is stopped at session end)."""
    shared: dict[str, milvus_server.MilvusServer] = {}
    started: list[milvus_server.MilvusServer] = []

    def get(kind: str, fresh: bool = False) -> milvus_server.MilvusServer:
        if not fresh and kind in shared:
            return shared[kind]
        server = milvus_server.start_server(kind, tmp_path_factory.mktemp(f"milvus-{kind}"))
        measurements.setdefault(f"milvus_{kind}_start_s", []).append(server.started_in_seconds)
        started.append(server)
        if not fresh:
            shared[kind] = server
        return server

    yield get
    for server in started:
        milvus_server.stop_server(server)


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
