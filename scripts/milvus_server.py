#!/usr/bin/env python3
"""Start and stop real Milvus servers on loopback, for tests and for users (no Docker needed).

Two kinds:

* ``standalone``: the real Milvus standalone 2.3.5 server (Go/C++) from PyPI ``milvus==2.3.5``, installed in its
  own venv ``<repo>/.venv-milvus235`` (created on first use, like ``lsm_ensure_milvus_standalone`` in
  scripts/_env.sh). Authorization is ON, token ``root:Milvus``. No BM25 / sparse vectors / hybrid search.
* ``lite``: ``milvus-lite server`` (milvus-lite 3.x from the main .venv): the Milvus gRPC protocol with BM25 and
  hybrid search, no authorization (any token is accepted).

Library use (tests put ``<repo>/scripts`` on ``sys.path``)::

    server = start_server("standalone", tmp_path / "milvus")   # waits until list_collections() works
    client = connect(server.uri, server.token)                 # a MilvusClient with its own connection
    server = restart_server(server)                             # same data dir, same port
    stop_server(server)                                         # SIGTERM to the process group, then SIGKILL

Command line (the server keeps running, detached, after ``start`` returns)::

    python scripts/milvus_server.py start --kind standalone|lite --data DIR [--port P]
    python scripts/milvus_server.py status --data DIR
    python scripts/milvus_server.py stop --data DIR

``start`` prints ``MILVUS_URI=...`` and ``MILVUS_TOKEN=...`` (``eval``-able) and writes ``DIR/server.json``.

How the standalone server is launched. ``milvus-server`` (the package's launcher) unpacks ~250 MB of binaries
into ``DIR/bin``, writes ``DIR/configs/milvus.yaml`` and runs ``DIR/bin/milvus run standalone``. Its ``--*-port``
flags are only where a search for a free port *starts* (a busy port silently becomes the next one), its
health/metrics port is always "first free from 9091" (``METRICS_PORT``, no flag), the embedded etcd always
listens on 127.0.0.1:2379/2380 (not ``--etcd-port``), and the launcher never notices when ``milvus`` dies. Two
servers started at the same time therefore collide. So we run the launcher's own ``main()`` (the
``milvus-server`` entry point, same argv) through a small shim (``_STANDALONE_SHIM``) that (1) sets where the
health-port search starts, (2) checks ports with SO_REUSEADDR so a port in TIME_WAIT after a restart is not
skipped, (3) makes the launcher exit when ``milvus`` exits. Every port gets a free port chosen here, the embedded
etcd gets its ports from ``ETCD_CONFIG_PATH``, and ``DIR/bin`` is a symlink to binaries unpacked once into the
venv. After start-up the proxy port written to ``DIR/configs/milvus.yaml`` is checked against the one asked for.
Milvus 2.3.5's gRPC servers listen on all interfaces (``C.ip=127.0.0.1`` only sets the advertised address);
only etcd is bound to 127.0.0.1. Starts are serialized by a lock file from choosing ports until the server answers
(ports are picked with bind(0) and released; two simultaneous starts were handed the same port). Milvus reads
any config key from the environment too; two are set: ``QUERYNODE_GRACEFULSTOPTIMEOUT=1`` (SIGTERM took ~40 s
with a loaded collection) and ``COMMON_SESSION_TTL=10`` (the first Strong query after a restart took ~24 s).

Milvus 2.3.5 as seen from pymilvus 2.6: ``get_server_version()`` is ``v2.3.5-lite`` (milvus-lite 3.2.2 says
``milvus_lite-3.2.2``). ``create_collection`` ACCEPTS a SPARSE_FLOAT_VECTOR field and a BM25 function (the
function is silently dropped); ``create_index`` on the sparse field fails (code 1100, "create index on 104 field
is not supported"); loading such a collection aborts the server (SIGABRT in segcore) and it does not come back
on that data dir. ``hybrid_search`` is gRPC UNIMPLEMENTED; HNSW_SQ is "invalid index type". Decide from the
version before creating anything.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymilvus import MilvusClient

ROOT = Path(__file__).resolve().parents[1]
STANDALONE_VENV = ROOT / ".venv-milvus235"
MILVUS_STANDALONE_SPEC = "milvus==2.3.5"
# Bump when the unpacked-binaries layout changes; scripts/_env.sh writes the same stamp.
STANDALONE_STAMP_NAME = ".milvus-standalone.stamp"
STANDALONE_STAMP_VERSION = "bin-cache-1"
STANDALONE_BIN_CACHE = "milvus-bin-cache"  # <venv>/milvus-bin-cache/bin/{milvus,lib*.so*}
STANDALONE_TOKEN = "root:Milvus"
KINDS = ("standalone", "lite")
LOG_TAIL_LINES = 40
STOP_TIMEOUT_S = 30.0
STATE_FILE = "server.json"
LAUNCHER_LOG = "server.log"

# The components whose advertised address is pinned to loopback.
STANDALONE_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
# Port options of `milvus-server` (besides --proxy-port), each given its own free port.
STANDALONE_PORT_KEYS = (
    "etcd_port",
    "root_coord_port",
    "proxy_internal_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)

# Runs in .venv-milvus235: argv = [healthz_port, <milvus-server arguments>...].
_STANDALONE_SHIM = """\
import socket, sys
import milvus

def _try_bind_port(self, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except (OSError, ValueError, OverflowError):
        sock.close()
        return None

milvus.MilvusServerConfig.try_bind_port = _try_bind_port
milvus.MilvusServer.running = property(lambda self: self.server_proc is not None and self.server_proc.poll() is None)
milvus.default_server.webservice_port = int(sys.argv.pop(1))
sys.argv[0] = "milvus-server"
milvus.main()
"""


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
        return _log_tail(self.kind, self.data_dir, self.log_path, lines)

    def rss_bytes(self) -> int:
        """Resident memory of every live process of the server's process group."""
        return sum(_rss_bytes(pid) for pid in _group_pids(self.pid))

    def is_running(self) -> bool:
        return bool(_owned_group_pids(self))


# ---------------------------------------------------------------------------------------------------------------
# The standalone venv


def _standalone_stamp_key(venv_python: Path) -> str:
    version = subprocess.run(
        [str(venv_python), "-c", "import sys; print(sys.version.split()[0])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{MILVUS_STANDALONE_SPEC}\n{version}\n{STANDALONE_STAMP_VERSION}\n"


def ensure_standalone_venv(venv: Path = STANDALONE_VENV, python: str | None = None) -> Path:
    """Create ``venv`` with ``milvus==2.3.5`` and its binaries unpacked once; idempotent (stamp file).

    Same steps and stamp as ``lsm_ensure_milvus_standalone`` in scripts/_env.sh. Returns the venv's Python.
    The wheel is ``py3-none-manylinux2014_x86_64`` (any Python 3, Linux x86-64 only, standard library only).
    """
    venv = Path(venv)
    venv.mkdir(parents=True, exist_ok=True)
    venv_python = venv / "bin" / "python"
    stamp = venv / STANDALONE_STAMP_NAME
    with open(venv / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs creating it at once
        if venv_python.exists() and stamp.exists():
            try:
                if stamp.read_text() == _standalone_stamp_key(venv_python):
                    return venv_python
            except (OSError, subprocess.CalledProcessError):
                pass
        stamp.unlink(missing_ok=True)
        if not venv_python.exists() or subprocess.run([str(venv_python), "-c", "pass"], capture_output=True).returncode:
            base = python or getattr(sys, "_base_executable", None) or sys.executable
            print(f"Creating {venv} with {base}", file=sys.stderr)
            subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, stdout=2)
        print(f"Installing {MILVUS_STANDALONE_SPEC} into {venv}", file=sys.stderr)
        subprocess.run(
            [
                str(venv_python),
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "--disable-pip-version-check",
                MILVUS_STANDALONE_SPEC,
            ],
            check=True,
            stdout=2,  # keep stdout clean for `eval "$(milvus_server.py start ...)"`
        )
        cache = venv / STANDALONE_BIN_CACHE
        partial = venv / (STANDALONE_BIN_CACHE + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run(
            [str(venv_python), "-c", "import sys, milvus; milvus._initialize_data_files(sys.argv[1])", str(partial)],
            check=True,
        )
        partial.rename(cache)
        stamp.write_text(_standalone_stamp_key(venv_python))
    return venv_python


# ---------------------------------------------------------------------------------------------------------------
# Ports and processes


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free on 127.0.0.1 right now (held together while choosing)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_is_free(port: int) -> bool:
    """True when a server could listen on ``port`` (TIME_WAIT leftovers do not count as busy)."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1")):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
                sock.listen()
            except OSError:
                return False
    return True


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, pgrp) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def _group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``. A zombie counts while other threads of it still exit:
    its sockets (the listening port) are released only when the last thread is gone."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat and stat[1] == pgid and (stat[0] not in ("Z", "X") or _threads(int(entry)) > 1):
            pids.append(int(entry))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _owned_group_pids(server: MilvusServer) -> list[int]:
    """The server's live processes; empty when the group is gone or was recycled by something else."""
    pids = _group_pids(server.pid)
    marker = str(server.data_dir)
    if pids and not any(marker in _cmdline(pid) for pid in pids):
        return []  # a recycled process group id: not ours
    return pids


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return [line for line in path.read_text(errors="replace").splitlines() if line.strip()][-lines:]
    except OSError:
        return []


_CRASH_MARKERS = ("panic:", "fatal error:", "SIGABRT", "SIGSEGV", "SIGBUS", "terminate called")


def _crash_excerpt(path: Path, lines: int) -> list[str]:
    """From the first crash marker of a Go/C++ stderr log on (a goroutine dump follows it); else the tail."""
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    for index, line in enumerate(text):
        if line.startswith(_CRASH_MARKERS):
            return text[max(0, index - 5) : index + lines - 5]
    return text[-lines:]


def _log_tail(kind: str, data_dir: Path, log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    excerpts = [(f"last lines of {log_path}", _tail(log_path, lines if kind == "lite" else 10))]
    if kind == "standalone":
        logs = data_dir / "logs"
        # milvus' structured log (stdout), then its stderr: etcd, cgo aborts and Go panics with goroutine dumps.
        excerpts.append((f"last lines of {logs / 'milvus-stdout.log'}", _tail(logs / "milvus-stdout.log", 15)))
        excerpts.append((f"from {logs / 'milvus-stderr.log'}", _crash_excerpt(logs / "milvus-stderr.log", lines)))
    parts = [f"--- {title}\n" + "\n".join(text) for title, text in excerpts if text]
    return "\n".join(parts) or f"(no log in {data_dir})"


# ---------------------------------------------------------------------------------------------------------------
# Start, stop, restart


def _lite_command(data_dir: Path, port: int) -> list[str]:
    script = Path(sys.executable).parent / "milvus-lite"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "milvus_lite"]
    return [*head, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]


def _write_etcd_config(path: Path, client_port: int, peer_port: int) -> None:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    path.write_text(
        "# Written by scripts/milvus_server.py; read by milvus through ETCD_CONFIG_PATH.\n"
        f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n"
    )


def _link_binaries(venv: Path, data_dir: Path) -> None:
    """Point DATA/bin at the binaries unpacked once in the venv (saves ~4 s and 250 MB per data dir)."""
    cache_bin = venv / STANDALONE_BIN_CACHE / "bin"
    bin_dir = data_dir / "bin"
    if bin_dir.is_symlink():
        if bin_dir.resolve() == cache_bin.resolve():
            return
        bin_dir.unlink()
    elif bin_dir.exists():
        return  # unpacked by a plain `milvus-server --data DIR`: the launcher checks it against the wheel
    bin_dir.symlink_to(cache_bin, target_is_directory=True)


def _standalone_ports(port: int, previous: dict[str, int] | None) -> dict[str, int]:
    """A distinct free port for every listener; reuse ``previous`` ones that are still free (restart)."""
    # healthz_port: the launcher's default is "first free from 9091", which two starts at once both pick.
    names = ["proxy_port", *STANDALONE_PORT_KEYS, "etcd_peer_port", "healthz_port"]
    ports: dict[str, int] = {"proxy_port": port}
    for name in names[1:]:
        old = (previous or {}).get(name)
        if old and old not in ports.values() and port_is_free(old):
            ports[name] = old
    fresh = iter(p for p in free_ports(len(names) + 4) if p not in ports.values())
    for name in names:
        ports.setdefault(name, next(fresh))
    return ports


def _standalone_command(venv_python: Path, data_dir: Path, ports: dict[str, int]) -> list[str]:
    cmd = [str(venv_python), "-c", _STANDALONE_SHIM, str(ports["healthz_port"]), "--data", str(data_dir)]
    cmd += ["--proxy-port", str(ports["proxy_port"])]
    for key in STANDALONE_PORT_KEYS:
        cmd += ["--" + key.replace("_", "-"), str(ports[key])]
    # Any value turns authorization on (the launcher's type=bool); omit the flag for no auth.
    cmd += ["--authorization-enabled", "true"]
    for component in STANDALONE_COMPONENTS:
        cmd += ["--extra-config", f"{component}.ip=127.0.0.1"]
    return cmd


def _configured_proxy_port(data_dir: Path) -> int | None:
    """The proxy port the launcher wrote into DATA/configs/milvus.yaml (it moves on silently if one is busy)."""
    section = None
    try:
        lines = (data_dir / "configs" / "milvus.yaml").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            section = line.strip()[:-1]
        elif section == "proxy" and line.startswith("  port:"):
            return int(line.split(":", 1)[1].split("#")[0])
    return None


def _healthz_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200 and b"OK" in resp.read()
    except (urllib.error.URLError, OSError):
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


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
    venv_python = ensure_standalone_venv() if kind == "standalone" else None
    with _start_lock(timeout):
        return _start_locked(kind, data_dir, port, timeout, venv_python, _previous)


@contextlib.contextmanager
def _start_lock(timeout: float) -> Iterator[None]:
    """Serialize starts (threads and processes of this user) from choosing ports until the server listens.

    Ports come from bind(("127.0.0.1", 0)) and are released before the server binds them; two starts at the
    same moment were handed the same port by the kernel (seen: both standalone servers got one proxy port).
    """
    path = Path(tempfile.gettempdir()) / f"llama-stack-milvus-start-{os.getuid()}.lock"
    with open(path, "a") as lock:  # not inherited by the server (close_fds)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another Milvus start held {path} for over {timeout:.0f} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
    healthz_port = None
    ports: dict[str, int] = {}
    if kind == "standalone":
        assert venv_python is not None
        _link_binaries(STANDALONE_VENV, data_dir)
        (data_dir / "configs").mkdir(exist_ok=True)
        (data_dir / "configs" / "milvus.yaml").unlink(missing_ok=True)  # checked below against `port`
        ports = _standalone_ports(port, _previous.ports if _previous else None)
        healthz_port = ports["healthz_port"]
        etcd_config = data_dir / "configs" / "embedEtcd.yaml"
        _write_etcd_config(etcd_config, ports["etcd_port"], ports["etcd_peer_port"])
        env["ETCD_CONFIG_PATH"] = str(etcd_config)
        # Milvus reads any config key from the environment too (queryNode.gracefulStopTimeout is not in the
        # launcher's template, so --extra-config cannot set it). On SIGTERM a query node holding a loaded
        # collection waits this long (default 30 s, ~40 s in all) to hand its segments to another node; a
        # standalone server has none. Acknowledged rows are in the WAL (rocksmq) either way.
        env["QUERYNODE_GRACEFULSTOPTIMEOUT"] = "1"
        # Only rootcoord revokes its etcd session on stop; the others expire with their lease (default 30 s,
        # renewed when etcd restarts). Until the old proxy's session is gone, time ticks stall and the first
        # Strong-consistency query after a restart waited ~24 s (with 10 s: ~3.5 s).
        env["COMMON_SESSION_TTL"] = "10"
        cmd = _standalone_command(venv_python, data_dir, ports)
        token: str | None = STANDALONE_TOKEN
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
        healthz_port=healthz_port,
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
        if kind == "standalone":
            configured = _configured_proxy_port(data_dir)
            if configured is not None and configured != port:
                raise fail(f"was configured on port {configured} instead of {port} (port taken meanwhile)")
        ready_to_probe = _healthz_ok(healthz_port) if kind == "standalone" else _port_open(port)
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

    def wait_gone(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            reap()
            if not _group_pids(server.pid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def clean_up(pids: list[int]) -> None:
        # milvus writes $TMPDIR/milvus/server_id_<pid> at start and leaves it behind.
        for pid in pids:
            with contextlib.suppress(OSError):
                (Path(os.environ.get("TMPDIR") or "/tmp") / "milvus" / f"server_id_{pid}").unlink(missing_ok=True)

    reap()
    pids = _owned_group_pids(server)
    if not pids:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    if not wait_gone(timeout):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        if not wait_gone(10):
            raise RuntimeError(f"processes {_group_pids(server.pid)} of Milvus {server.kind} survived SIGKILL")
    clean_up(pids)


def restart_server(server: MilvusServer, timeout: float = 120) -> MilvusServer:
    """Stop ``server`` and start the same kind on the same data directory and port."""
    stop_server(server)
    deadline = time.monotonic() + 10
    while not port_is_free(server.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    return start_server(server.kind, server.data_dir, server.port, timeout, _previous=server)


# ---------------------------------------------------------------------------------------------------------------
# Command line


def _read_state(data_dir: Path) -> MilvusServer | None:
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    return MilvusServer.from_json(json.loads(path.read_text()))


def _cli_start(args: argparse.Namespace) -> int:
    data_dir = Path(args.data).resolve()
    old = _read_state(data_dir)
    if old is not None and old.is_running():
        print(
            f"error: a Milvus {old.kind} server already runs on {data_dir} (pid {old.pid}, {old.uri})", file=sys.stderr
        )
        return 1
    server = start_server(args.kind, data_dir, args.port, args.timeout)
    try:
        (data_dir / STATE_FILE).write_text(json.dumps(server.to_json(), indent=2) + "\n")
    except BaseException:
        stop_server(server)  # without server.json, `stop` could not find it
        raise
    print(
        f"Milvus {server.kind} ready in {server.started_in_seconds} s (pid {server.pid}, log {server.log_path})",
        file=sys.stderr,
    )
    print(f"MILVUS_URI={server.uri}")
    print(f"MILVUS_TOKEN={server.token or ''}")
    return 0


def _cli_stop(args: argparse.Namespace) -> int:
    data_dir = Path(args.data).resolve()
    server = _read_state(data_dir)
    if server is None:
        print(f"no {STATE_FILE} in {data_dir}: nothing to stop", file=sys.stderr)
        return 0
    running = server.is_running()
    stop_server(server)
    (data_dir / STATE_FILE).unlink(missing_ok=True)
    print(f"Milvus {server.kind} (pid {server.pid}) {'stopped' if running else 'was not running'}", file=sys.stderr)
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    server = _read_state(Path(args.data).resolve())
    if server is None or not server.is_running():
        print("not running")
        return 3
    print(f"{server.kind} running: {server.uri} pid {server.pid} rss {server.rss_bytes() // 2**20} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        venv_python = ROOT / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.executable).resolve() != venv_python.resolve():
            os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *(argv or sys.argv[1:])])
        print("error: pymilvus is not installed; run this with <repo>/.venv/bin/python", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a server (detached) and wait until it answers")
    start.add_argument("--kind", choices=KINDS, required=True)
    start.add_argument("--data", required=True, help="data directory (created if missing)")
    start.add_argument("--port", type=int, default=None, help="gRPC port on 127.0.0.1 (default: a free one)")
    start.add_argument("--timeout", type=float, default=120)
    start.set_defaults(func=_cli_start)
    stop = sub.add_parser("stop", help="stop the server started on --data")
    stop.add_argument("--data", required=True)
    stop.set_defaults(func=_cli_stop)
    status = sub.add_parser("status", help="exit 0 if the server on --data runs, 3 if not")
    status.add_argument("--data", required=True)
    status.set_defaults(func=_cli_status)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
