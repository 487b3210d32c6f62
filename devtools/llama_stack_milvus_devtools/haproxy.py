"""HAProxy (Debian's ``haproxy`` package, installed with apt-get when missing) in front of stack replicas on loopback.

    proxy = HAProxy(state_dir, port=8321, backends=[8401, 8402, 8403])
    proxy.start()                 # writes haproxy.cfg, checks it, starts, waits until every backend is UP
    proxy.server_states()         # {"replica-0": "UP", "replica-1": "DOWN", ...} from the admin socket
    proxy.stop()

Routing: round robin; ``GET /v1/health`` every CHECK_INTERVAL_S per replica, FALL failures take it out, RISE
successes bring it back. A replica that dies is out of rotation within HEALTH_CHECK_WINDOW_S = FALL x
CHECK_INTERVAL_S + CHECK_TIMEOUT_S = 4 s (the health-check window; about 2 s when its port refuses connections, as
after kill -9). Inside that window a new request sent to the dead replica has its connection refused and HAProxy
sends it to another replica (``retry-on conn-failure`` + ``option redispatch``), so it does not fail. Requests sent
before the replica's processes are gone fail: those it was handling, and those its port still accepted while the
kernel tore the killed process down (tens to hundreds of ms). HAProxy answers 502, or closes the client's connection
without a response (HTTP's signal that the request was not processed); POSTs are not idempotent, so they are never
replayed.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

from . import logs, processes
from .ports import port_choice_lock, port_is_free, port_open

CHECK_INTERVAL_S = 1
FALL = 2
RISE = 1
CHECK_TIMEOUT_S = 2
# The longest a dead replica stays in rotation: FALL checks, the last of which may wait out its timeout.
HEALTH_CHECK_WINDOW_S = FALL * CHECK_INTERVAL_S + CHECK_TIMEOUT_S
# Attaching a large file to a store takes minutes on a busy machine: the balancer must not cut it off.
SERVER_TIMEOUT = "10m"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def binary() -> str:
    """The haproxy executable, installing Debian's ``haproxy`` package when none is found."""
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("HAProxy is not installed: run `sudo apt-get install -y haproxy`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "haproxy"], check=True, env=env, stdout=subprocess.DEVNULL)
    if not Path("/usr/sbin/haproxy").exists():
        raise RuntimeError("apt-get installed haproxy, yet /usr/sbin/haproxy does not exist")
    return "/usr/sbin/haproxy"


def server_name(index: int) -> str:
    return f"replica-{index}"


def config_text(port: int, backends: list[int], admin_socket: Path) -> str:
    servers = "\n".join(f"    server {server_name(i)} 127.0.0.1:{backend} check" for i, backend in enumerate(backends))
    return f"""\
# written by llama_stack_milvus_devtools.haproxy; rewritten at every start
global
    log stdout format raw local0 info
    stats socket {admin_socket} mode 600 level admin
    maxconn 4096

defaults
    mode http
    log global
    option httplog
    # Only errors, retries and redispatches reach the log, not every request.
    option dontlog-normal
    timeout connect 2s
    timeout client {SERVER_TIMEOUT}
    timeout server {SERVER_TIMEOUT}
    timeout queue 30s
    timeout check {CHECK_TIMEOUT_S}s
    # A refused connection (a dead replica not yet marked DOWN) is retried on another replica; a request the
    # replica may have started is never replayed.
    retries 3
    retry-on conn-failure
    option redispatch 1
    # A new connection to a replica per request: a request sent on an idle pooled connection to a replica that has
    # just died fails (502) without being retried, since it may have reached the replica; a refused connect is retried.
    http-reuse never

frontend stack
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /v1/health
    http-check expect status 200
    default-server inter {CHECK_INTERVAL_S}s fall {FALL} rise {RISE}
{servers}
"""


class HAProxy:
    """One HAProxy process, its own process group, configured from ``backends`` (replica ports, in order)."""

    def __init__(self, state_dir: Path, port: int, backends: list[int]) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.backends = list(backends)
        self.config_path = self.state_dir / "haproxy.cfg"
        self.admin_socket = self.state_dir / "haproxy.sock"
        self.log_path = self.state_dir / "haproxy.log"
        self.pid: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def to_json(self) -> dict:
        return {"port": self.port, "backends": self.backends, "pid": self.pid}

    @classmethod
    def from_json(cls, state_dir: Path, data: dict) -> HAProxy:
        proxy = cls(state_dir, data["port"], data["backends"])
        proxy.pid = data["pid"]
        return proxy

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Write and check the config, start HAProxy and wait until every backend passed its health check and
        ``/v1/health`` answers through it."""
        haproxy = binary()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_text(self.port, self.backends, self.admin_socket))
        checked = subprocess.run([haproxy, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"HAProxy rejects {self.config_path}:\n{checked.stdout}{checked.stderr}")
        with port_choice_lock(timeout):
            if not port_is_free(self.port):
                raise RuntimeError(f"cannot start HAProxy on 127.0.0.1:{self.port}: the port is in use")
            with self.log_path.open("a") as log:
                # -db: stay in the foreground (no daemon), so this process group is the whole of it.
                self.process = subprocess.Popen(
                    [haproxy, "-db", "-f", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pid = self.process.pid
            deadline = time.monotonic() + timeout
            while not port_open(self.port):
                self._fail_if_exited()
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"HAProxy not listening on {self.port} after {timeout:.0f} s\n{self._tail()}")
                time.sleep(0.05)
        self.wait_until_up(range(len(self.backends)), timeout)
        response = httpx.get(f"{self.url}/v1/health", timeout=10)
        if response.status_code != 200:
            raise RuntimeError(f"HAProxy answered /v1/health with {response.status_code}: {response.text[:200]}")

    def _fail_if_exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"HAProxy exited (code {self.process.returncode}) during start-up\n{self._tail()}")

    def _tail(self) -> str:
        return "\n".join(logs.tail(self.log_path, 20))

    def stats(self) -> dict[str, dict[str, str]]:
        """Each replica's row of HAProxy's ``show stat`` (``status``: UP, DOWN, ...; ``stot``: sessions served)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {row["svname"]: row for row in rows if row["pxname"] == "replicas" and "-" in row["svname"]}

    def server_states(self) -> dict[str, str]:
        """Each replica's state as HAProxy sees it (``UP``, ``DOWN``, ``UP 1/2``, ...)."""
        return {name: row["status"] for name, row in self.stats().items()}

    def wait_until_up(self, indexes: range | list[int], timeout: float = START_TIMEOUT_S) -> None:
        """Wait until HAProxy's health checks pass for the replicas at ``indexes``."""
        names = [server_name(i) for i in indexes]
        deadline = time.monotonic() + timeout
        while True:
            self._fail_if_exited()
            states = self.server_states()
            if all(states.get(name) == "UP" for name in names):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy health checks not passing after {timeout:.0f} s: {states}")
            time.sleep(0.1)

    def is_running(self) -> bool:
        return bool(self.pid and processes.group_pids(self.pid) and "haproxy" in processes.cmdline(self.pid))

    def stop(self) -> None:
        """SIGTERM (HAProxy's hard stop), SIGKILL after STOP_TIMEOUT_S. Idempotent."""
        if self.pid is None:
            return
        if self.process is None and not self.is_running():
            return  # gone, or the pid now belongs to something else

        def reap() -> None:
            if self.process is not None:
                self.process.poll()

        reap()
        if processes.group_pids(self.pid):
            processes.stop_group(self.pid, "HAProxy", STOP_TIMEOUT_S, reap)
        self.admin_socket.unlink(missing_ok=True)
        self.pid = self.process = None
