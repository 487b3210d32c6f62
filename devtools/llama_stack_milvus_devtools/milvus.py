"""Real Milvus servers on loopback, started as their own process group: standalone 2.3.5 or ``milvus-lite server``.

* ``standalone``: the real Milvus standalone 2.3.5 server, from ``<repo>/.venv-milvus235`` (see standalone.py).
* ``lite``: ``milvus-lite server`` (milvus-lite 3.x from the running venv): the Milvus gRPC protocol with BM25 and
  hybrid search, no authorization (any token is accepted).

    server = start_server("standalone", tmp_path / "milvus")   # waits until list_collections() works
    client = connect(server.uri, server.token)                 # a MilvusClient with its own connection
    server = restart_server(server)                             # same data dir, same port
    stop_server(server)                                         # SIGTERM to the process group, then SIGKILL
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from . import logs, processes, standalone
from .ports import free_port, port_choice_lock, port_is_free, port_open

if TYPE_CHECKING:
    from pymilvus import MilvusClient

KINDS = ("standalone", "lite")
LOG_TAIL_LINES = 40
STOP_TIMEOUT_S = 30.0
LAUNCHER_LOG = "server.log"


@dataclass
class MilvusServer:
    kind: str
    uri: str
    token: str | None
    pid: int  # the launcher; it leads its own session and process group (pgid == pid)
    data_dir: Path
    log_path: Path
    started_in_seconds: float
    port: int = 0
    healthz_port: int | None = None  # standalone only: http://127.0.0.1:<healthz_port>/healthz
    ports: dict[str, int] = field(default_factory=dict)  # standalone: every port handed to the server
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "process"}
        data["ports"] = dict(self.ports)
        data["data_dir"] = str(self.data_dir)
        data["log_path"] = str(self.log_path)
        return data

    @classmethod
    def from_json(cls, data: dict) -> MilvusServer:
        data = dict(data)
        data["data_dir"] = Path(data["data_dir"])
        data["log_path"] = Path(data["log_path"])
        return cls(**data)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        excerpts = [(f"last lines of {self.log_path}", logs.tail(self.log_path, lines if self.kind == "lite" else 10))]
        if self.kind == "standalone":
            excerpts += standalone.log_excerpts(self.data_dir, lines)
        parts = [f"--- {title}\n" + "\n".join(text) for title, text in excerpts if text]
        return "\n".join(parts) or f"(no log in {self.data_dir})"

    def rss_bytes(self) -> int:
        """Resident memory of every live process of the server's process group."""
        return processes.group_rss_bytes(self.pid)

    def is_running(self) -> bool:
        return bool(self.owned_pids())

    def owned_pids(self) -> list[int]:
        """The server's live processes; empty when the group is gone or was recycled by something else."""
        pids = processes.group_pids(self.pid)
        marker = str(self.data_dir)
        if pids and not any(marker in processes.cmdline(pid) for pid in pids):
            return []  # a recycled process group id: not ours
        return pids


def connect(uri: str, token: str | None = None, timeout: float = 10) -> MilvusClient:
    """A MilvusClient with its own gRPC connection, closed by ``client.close()``.

    pymilvus (2.6) otherwise shares one connection per URI for the whole process and never closes it: it keeps
    pinging while idle, ``milvus-lite server`` answers with GOAWAY "Too many pings", and a later client to the same
    URI inherits the broken connection and the first client's connect timeout (a CI run failed that way).
    """
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token or "", timeout=timeout, dedicated=True)


def _list_collections(uri: str, token: str | None) -> list[str]:
    client = connect(uri, token, timeout=5)
    try:
        return client.list_collections()
    finally:
        client.close()


def _lite_command(data_dir: Path, port: int) -> list[str]:
    script = Path(sys.executable).parent / "milvus-lite"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "milvus_lite"]
    return [*head, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]


def start_server(
    kind: str,
    data_dir: Path,
    port: int | None = None,
    timeout: float = 120,
    *,
    _previous: MilvusServer | None = None,
) -> MilvusServer:
    """Start a ``kind`` server on ``data_dir`` (created if missing) listening on 127.0.0.1:``port`` (a free one if
    None) and wait until ``MilvusClient(uri, token).list_collections()`` works.

    Raises RuntimeError (with the last log lines) if the port is busy, or the server dies or is not ready in
    ``timeout`` seconds; the process group is stopped first.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    venv_python = standalone.ensure_venv() if kind == "standalone" else None
    with port_choice_lock(timeout):
        return _start_locked(kind, data_dir, port, timeout, venv_python, _previous)


def _start_locked(
    kind: str,
    data_dir: Path,
    port: int | None,
    timeout: float,
    venv_python: Path | None,
    _previous: MilvusServer | None,
) -> MilvusServer:
    if port is None:
        port = free_port()
    elif not port_is_free(port):
        raise RuntimeError(f"cannot start Milvus {kind} on 127.0.0.1:{port}: the port is in use")

    env = dict(os.environ)
    ports: dict[str, int] = {}
    if venv_python is not None:
        ports = standalone.ports(port, _previous.ports if _previous else None)
        env.update(standalone.prepare(data_dir, ports))
        cmd = standalone.command(venv_python, data_dir, ports)
        token: str | None = standalone.TOKEN
    else:
        cmd = _lite_command(data_dir, port)
        token = None

    log_path = data_dir / LAUNCHER_LOG
    started = time.monotonic()
    with open(log_path, "a") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start {kind} on 127.0.0.1:{port} =====\n")
        log.flush()
        process = subprocess.Popen(
            cmd,
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and process group: stop_server kills the whole tree
        )
    server = MilvusServer(
        kind=kind,
        uri=f"http://127.0.0.1:{port}",
        token=token,
        pid=process.pid,
        data_dir=data_dir,
        log_path=log_path,
        started_in_seconds=0.0,
        port=port,
        healthz_port=ports.get("healthz_port"),
        ports=ports,
        process=process,
    )

    def fail(reason: str) -> RuntimeError:
        stop_server(server)
        return RuntimeError(f"Milvus {kind} on {server.uri} (data {data_dir}) {reason}\n{server.log_tail()}")

    deadline = started + timeout
    last_error: Exception | None = None
    while True:
        if process.poll() is not None:
            raise fail(f"exited (code {process.returncode}) during start-up")
        if server.healthz_port is not None:
            configured = standalone.configured_proxy_port(data_dir)
            if configured is not None and configured != port:
                raise fail(f"was configured on port {configured} instead of {port} (port taken meanwhile)")
            ready_to_probe = standalone.healthz_ok(server.healthz_port)
        else:
            ready_to_probe = port_open(port)
        if ready_to_probe:
            try:
                _list_collections(server.uri, token)
                break
            except Exception as exc:  # noqa: BLE001 - any client error means "not ready yet"
                last_error = exc
        if time.monotonic() > deadline:
            raise fail(f"not ready after {timeout:.0f} s (last client error: {last_error!r})")
        time.sleep(0.2)
    server.started_in_seconds = round(time.monotonic() - started, 2)
    return server


def stop_server(server: MilvusServer, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server's process group, wait up to ``timeout`` s, then SIGKILL. Idempotent."""

    def reap() -> None:
        if server.process is not None:
            server.process.poll()  # our own child would linger as a zombie otherwise

    reap()
    pids = server.owned_pids()
    if not pids:
        return
    processes.stop_group(server.pid, f"Milvus {server.kind}", timeout, reap)
    if server.kind == "standalone":
        standalone.remove_server_id_files(pids)


def restart_server(server: MilvusServer, timeout: float = 120) -> MilvusServer:
    """Stop ``server`` and start the same kind on the same data directory and port."""
    stop_server(server)
    deadline = time.monotonic() + 10
    while not port_is_free(server.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    return start_server(server.kind, server.data_dir, server.port, timeout, _previous=server)
