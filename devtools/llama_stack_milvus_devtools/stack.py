"""A real Llama Stack server: one `llama stack run CONFIG --port P` process on its own data directory."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llama_stack_milvus.readiness import wait_until_answering

from . import REPO_ROOT, logs, processes
from .ports import free_port

EMBEDDED_RUN_YAML = REPO_ROOT / "distributions" / "milvus-embedded" / "run.yaml"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
# Settings of the developer's shell that would send a test server to remote inference or to their Milvus server.
REMOTE_SETTINGS = (
    "TOGETHER_API_KEY",
    "TOGETHER_URL",
    "DEEPSEEK_API_KEY",
    "DEEPSEEK_URL",
    "VLLM_URL",
    "VLLM_MODEL",
    "LLAMA_CPP_URL",
    "LLAMA_CPP_MODEL",
    "LLAMA_STACK_PORT",
    "MILVUS_URI",
    "MILVUS_TOKEN",
    "MILVUS_DB_NAME",
    "MILVUS_COLLECTION_MODE",
)


def without_local_llm(config: dict) -> dict:
    """A run config (parsed run.yaml) without its local chat model (inline::llama-cpp and the models it serves): for
    retrieval-only servers, which never chat, and for venvs without llama-cpp (.venv-lite25)."""
    inference = config["providers"]["inference"]
    config["providers"]["inference"] = [p for p in inference if p["provider_type"] != "inline::llama-cpp"]
    kept = {p["provider_id"] for p in config["providers"]["inference"]}
    models = config["registered_resources"]["models"]
    config["registered_resources"]["models"] = [m for m in models if m["provider_id"] in kept]
    return config


def offline_env() -> dict[str, str]:
    """This process' environment plus the offline model and tokenizer, without any REMOTE_SETTINGS."""
    from llama_stack_milvus.offline import ensure_embedding_model, ensure_tiktoken_cache

    env = dict(os.environ)
    env["TIKTOKEN_CACHE_DIR"] = str(ensure_tiktoken_cache())
    ensure_embedding_model()
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for name in REMOTE_SETTINGS:
        env.pop(name, None)
    return env


class StackServer:
    """`llama stack run` of ``run_yaml`` on ``data_dir`` (its log: ``data_dir/server.log``), on a free port of
    127.0.0.1 at each start. Can be stopped and started again on the same data; a context manager.

    ``env`` is the whole environment of the server (see offline_env); ``LLAMA_STACK_MILVUS_DIR`` is set to
    ``data_dir``. A failed start raises RuntimeError with the end of the log.

    ``port``: the same port at every start (a load balancer's backend) instead of a free one each time.
    ``own_group``: the server leads its own process group, and stop/kill end the whole group: with
    ``server.workers`` > 1 uvicorn's worker processes would otherwise outlive a killed parent and keep serving.
    """

    def __init__(
        self,
        run_yaml: Path,
        data_dir: Path,
        env: dict[str, str],
        start_timeout: float = START_TIMEOUT_S,
        port: int | None = None,
        own_group: bool = False,
    ):
        self.run_yaml = run_yaml
        self.fixed_port = port
        self.own_group = own_group
        self.data_dir = data_dir
        self.env = dict(env, LLAMA_STACK_MILVUS_DIR=str(data_dir))
        self.start_timeout = start_timeout
        self.log_path = data_dir / "server.log"
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.starts = 0
        self.start_seconds: list[float] = []  # how long each start took until /v1/health answered

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(logs.tail(self.log_path, lines)) or "(no log)"

    def log_size(self) -> int:
        """Where the log ends now: pass it to log_since later."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError(f"the server on {self.data_dir} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.fixed_port or free_port()
        self.starts += 1
        started = time.monotonic()
        llama = Path(sys.executable).parent / "llama"
        with self.log_path.open("a") as log:
            log.write(f"\n===== start #{self.starts} on port {self.port} =====\n")
            log.flush()
            self.process = subprocess.Popen(
                [str(llama), "stack", "run", str(self.run_yaml), "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_group,
            )
        if not wait_until_answering(self.process, f"{self.base_url}/v1/health", self.start_timeout, interval_s=0.5):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"llama stack run exited with {code} during start-up:\n{self.log_tail()}")
            self.stop()
            raise RuntimeError(f"llama stack server not healthy after {self.start_timeout} s:\n{self.log_tail()}")
        self.start_seconds.append(round(time.monotonic() - started, 2))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Idempotent."""
        if self.process is None:
            return
        if self.own_group:
            processes.stop_group(
                self.process.pid, f"llama stack run on port {self.port}", STOP_TIMEOUT_S, self.process.poll
            )
        elif self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """kill -9 of the server (of its whole group with ``own_group``): a crash."""
        if self.process is None:
            return
        if self.own_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            processes.stop_group(self.process.pid, f"llama stack run on port {self.port}", 10, self.process.poll)
        else:
            self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "StackServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
