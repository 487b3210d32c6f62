"""A real PostgreSQL server on loopback for tests, benchmarks and scripts/cluster: Debian's ``postgresql`` package
(installed with apt-get when missing), a fresh cluster on a free port, password authentication over TCP.

    server = PostgresServer(state_dir)   # initdb on first start: user, password and database of our own
    server.start()                       # waits until a client can connect to the database
    server.env()                         # POSTGRES_HOST/PORT/DB/USER/PASSWORD for the milvus-cluster distribution
    server.kill(); server.start()        # kill -9, then start again on the same data and port
    server.stop()                        # fast shutdown (clients are disconnected)

initdb and postgres refuse to run as root: as root, both run as the ``postgres`` user of the Debian package, and the
cluster lives under /var/tmp (a path that user can reach; pytest's and most users' tmp dirs are private).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import logs, processes
from .ports import free_port, port_choice_lock, port_is_free

STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
SYSTEM_USER = "postgres"
ROOT_DATA_BASE = Path("/var/tmp/llama-stack-milvus-postgres")
DATABASE = "llamastack"
USER = "llamastack"


def bin_dir() -> Path:
    """The directory of initdb and postgres, installing Debian's ``postgresql`` package when none is found."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise RuntimeError("PostgreSQL is not installed: run `sudo apt-get install -y postgresql`")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env, stdout=subprocess.DEVNULL)
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            raise RuntimeError("apt-get installed postgresql, yet no /usr/lib/postgresql/*/bin/initdb exists")
    return found[-1].parent


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SYSTEM_USER, "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    """One cluster, described by ``<state_dir>/postgres.json`` (port, password, data directory), so that a later
    process (``scripts/cluster down``) finds and stops it."""

    def __init__(self, state_dir: Path, port: int | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_file = self.state_dir / "postgres.json"
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            self.port, self.password, self.data_dir = state["port"], state["password"], Path(state["data_dir"])
        else:
            self.port = port or 0
            self.password = secrets.token_urlsafe(18)
            self.data_dir = self._new_data_dir()
        self.host = "127.0.0.1"
        self.log_path = self.state_dir / "postgres.log"
        self.process: subprocess.Popen | None = None

    def _new_data_dir(self) -> Path:
        if os.geteuid() != 0:
            return self.state_dir / "data"
        ROOT_DATA_BASE.mkdir(parents=True, exist_ok=True)
        ROOT_DATA_BASE.chmod(0o711)
        return ROOT_DATA_BASE / f"{self.state_dir.name}-{secrets.token_hex(4)}"

    def env(self) -> dict[str, str]:
        """The connection settings, under the names the milvus-cluster distribution reads."""
        return {
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_DB": DATABASE,
            "POSTGRES_USER": USER,
            "POSTGRES_PASSWORD": self.password,
        }

    def connect(self, timeout: float = 5):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, dbname=DATABASE, user=USER, password=self.password, connect_timeout=timeout
        )

    # ------------------------------------------------------------------------------------------ lifecycle

    def _init_cluster(self, binaries: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password_file = self.data_dir.parent / f".{self.data_dir.name}.pw"
        password_file.touch(mode=0o600)  # readable by its owner only, before the password goes in
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, SYSTEM_USER, SYSTEM_USER)
            shutil.chown(password_file, SYSTEM_USER, SYSTEM_USER)
        self.data_dir.chmod(0o700)
        try:
            command = [
                str(binaries / "initdb"), "-D", str(self.data_dir), "-U", USER, "--pwfile", str(password_file),
                "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8",
            ]  # fmt: skip
            result = subprocess.run(_as_server_user(command), capture_output=True, text=True)
        finally:
            password_file.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed for {self.data_dir}:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server (initdb first when the cluster is new) and wait until the database accepts a client."""
        binaries = bin_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self._init_cluster(binaries)
        with port_choice_lock(timeout):
            if not self.port:
                self.port = free_port()
            elif not port_is_free(self.port):
                raise RuntimeError(f"cannot start PostgreSQL on 127.0.0.1:{self.port}: the port is in use")
            self.state_file.write_text(
                json.dumps({"port": self.port, "password": self.password, "data_dir": str(self.data_dir)})
            )
            self.state_file.chmod(0o600)
            command = [
                str(binaries / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",  # TCP only
                "-c", "max_connections=300", "-c", "fsync=off",
            ]  # fmt: skip
            with open(self.log_path, "a") as log:
                self.process = subprocess.Popen(
                    _as_server_user(command),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._wait_ready(timeout, create_database=fresh)

    def _wait_ready(self, timeout: float, create_database: bool) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"PostgreSQL exited (code {code}) during start-up\n{self._tail()}")
            try:
                if create_database:
                    admin = psycopg2.connect(
                        host=self.host, port=self.port, dbname="postgres", user=USER, password=self.password
                    )
                    admin.autocommit = True  # CREATE DATABASE cannot run in a transaction
                    try:
                        admin.cursor().execute(f"CREATE DATABASE {DATABASE}")
                    finally:
                        admin.close()
                    create_database = False
                self.connect(timeout=2).close()
                return
            except psycopg2.OperationalError as e:
                if time.monotonic() > deadline:
                    self.kill()
                    reason = f"PostgreSQL on port {self.port} was not ready in {timeout:.0f} s"
                    raise RuntimeError(f"{reason}\n{self._tail()}") from e
                time.sleep(0.1)

    def _tail(self) -> str:
        return "\n".join(logs.tail(self.log_path, 20))

    def _postmaster_pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        except (OSError, ValueError, IndexError):
            return None

    def _pgid(self) -> int | None:
        pid = self._postmaster_pid()
        if pid is None:
            return self.process.pid if self.process else None
        stat = processes.proc_stat(pid)
        return stat[1] if stat else None

    def is_running(self) -> bool:
        pgid = self._pgid()
        return bool(pgid and processes.group_pids(pgid))

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected, nothing is lost), SIGKILL after a timeout."""
        pgid = self._pgid()
        if pgid:
            try:
                os.killpg(pgid, signal.SIGINT)
            except ProcessLookupError:
                return
            processes.stop_group(pgid, "PostgreSQL", STOP_TIMEOUT_S, reap=self._reap)

    def kill(self) -> None:
        """kill -9 of every PostgreSQL process: a crash; the next start recovers from the WAL. The backends too: each
        makes itself a process-group leader (setsid) and would answer one more query on an open connection."""
        postmaster = self._postmaster_pid()
        backends = processes.children(postmaster) if postmaster else []
        pgid = self._pgid()
        if pgid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pgid:
            processes.stop_group(pgid, "PostgreSQL", 10, reap=self._reap)
        deadline = time.monotonic() + 10
        while any((stat := processes.proc_stat(pid)) and stat[0] not in ("Z", "X") for pid in backends):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL backends {backends} survived SIGKILL")
            time.sleep(0.05)
        # The killed postmaster may linger as a zombie nobody reaps (no init in a container): postgres takes the
        # zombie's pid in this lock file for a live server and refuses to start. Every process of it is gone.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def _reap(self) -> None:
        if self.process is not None:
            self.process.poll()

    def remove(self) -> None:
        """Stop the server and delete its data and state."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
