"""Milvus standalone 2.3.5 (the real Go/C++ server) from PyPI ``milvus==2.3.5``: its own venv, and how to launch it.

The venv ``<repo>/.venv-milvus235`` is made here only (scripts/_env.sh calls ``ensure-standalone``); the wheel is
``py3-none-manylinux2014_x86_64`` (any Python 3, Linux x86-64 only, standard library only). Authorization is ON,
token ``root:Milvus``. No BM25 / sparse vectors / hybrid search.

How it is launched. ``milvus-server`` (the package's launcher) unpacks ~250 MB of binaries into ``DIR/bin``, writes
``DIR/configs/milvus.yaml`` and runs ``DIR/bin/milvus run standalone``. Its ``--*-port`` flags are only where a
search for a free port *starts* (a busy port silently becomes the next one), its health/metrics port is always
"first free from 9091" (``METRICS_PORT``, no flag), the embedded etcd always listens on 127.0.0.1:2379/2380 (not
``--etcd-port``), and the launcher never notices when ``milvus`` dies. Two servers started at the same time
therefore collide. So we run the launcher's own ``main()`` (the ``milvus-server`` entry point, same argv) through a
small shim (``SHIM``) that (1) sets where the health-port search starts, (2) checks ports with SO_REUSEADDR so a
port in TIME_WAIT after a restart is not skipped, (3) makes the launcher exit when ``milvus`` exits. Every port
gets a free port chosen here, the embedded etcd gets its ports from ``ETCD_CONFIG_PATH``, and ``DIR/bin`` is a
symlink to binaries unpacked once into the venv. After start-up the proxy port written to
``DIR/configs/milvus.yaml`` is checked against the one asked for. Milvus 2.3.5's gRPC servers listen on all
interfaces (``C.ip=127.0.0.1`` only sets the advertised address); only etcd is bound to 127.0.0.1. Milvus reads any
config key from the environment too; two are set: ``QUERYNODE_GRACEFULSTOPTIMEOUT=1`` (SIGTERM took ~40 s with a
loaded collection) and ``COMMON_SESSION_TTL=10`` (the first Strong query after a restart took ~24 s).

Milvus 2.3.5 as seen from pymilvus 2.6: ``get_server_version()`` is ``v2.3.5-lite`` (milvus-lite 3.2.2 says
``milvus_lite-3.2.2``). ``create_collection`` ACCEPTS a SPARSE_FLOAT_VECTOR field and a BM25 function (the
function is silently dropped); ``create_index`` on the sparse field fails (code 1100, "create index on 104 field
is not supported"); loading such a collection aborts the server (SIGABRT in segcore) and it does not come back
on that data dir. ``hybrid_search`` is gRPC UNIMPLEMENTED; HNSW_SQ is "invalid index type". Decide from the
version before creating anything.
"""

import fcntl
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from . import REPO_ROOT, logs
from .ports import free_ports, port_is_free

VENV = REPO_ROOT / ".venv-milvus235"
SPEC = "milvus==2.3.5"
STAMP_NAME = ".milvus-standalone.stamp"
STAMP_VERSION = "bin-cache-1"  # bump when the unpacked-binaries layout changes
BIN_CACHE = "milvus-bin-cache"  # <venv>/milvus-bin-cache/bin/{milvus,lib*.so*}
TOKEN = "root:Milvus"

# The components whose advertised address is pinned to loopback.
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
# Port options of `milvus-server` (besides --proxy-port), each given its own free port.
PORT_KEYS = (
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
SHIM = """\
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


# ---------------------------------------------------------------------------------------------------------------
# The venv


def _stamp_key(venv_python: Path) -> str:
    version = subprocess.run(
        [str(venv_python), "-c", "import sys; print(sys.version.split()[0])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{SPEC}\n{version}\n{STAMP_VERSION}\n"


def ensure_venv(venv: Path = VENV) -> Path:
    """Create ``venv`` with ``milvus==2.3.5`` and its binaries unpacked once; idempotent (stamp file: spec,
    interpreter version, cache layout). Holds ``venv/.lock`` while working. Returns the venv's Python.

    Prints progress on stderr only: stdout stays clean for ``eval "$(scripts/milvus_server.py start ...)"``.
    """
    venv = Path(venv)
    venv.mkdir(parents=True, exist_ok=True)
    venv_python = venv / "bin" / "python"
    stamp = venv / STAMP_NAME
    with open(venv / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs creating it at once
        if venv_python.exists() and stamp.exists():
            try:
                if stamp.read_text() == _stamp_key(venv_python):
                    return venv_python
            except (OSError, subprocess.CalledProcessError):
                pass
        stamp.unlink(missing_ok=True)
        if not venv_python.exists() or subprocess.run([str(venv_python), "-c", "pass"], capture_output=True).returncode:
            base = getattr(sys, "_base_executable", None) or sys.executable
            print(f"Creating {venv} with {base}", file=sys.stderr)
            subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, stdout=2)
        print(f"Installing {SPEC} into {venv}", file=sys.stderr)
        pip = [str(venv_python), "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check"]
        subprocess.run([*pip, SPEC], check=True, stdout=2)
        cache = venv / BIN_CACHE
        partial = venv / (BIN_CACHE + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        subprocess.run(
            [str(venv_python), "-c", "import sys, milvus; milvus._initialize_data_files(sys.argv[1])", str(partial)],
            check=True,
            stdout=2,
        )
        partial.rename(cache)
        stamp.write_text(_stamp_key(venv_python))
    return venv_python


# ---------------------------------------------------------------------------------------------------------------
# A server on a data directory


def ports(proxy_port: int, previous: dict[str, int] | None) -> dict[str, int]:
    """A distinct free port for every listener; reuse ``previous`` ones that are still free (restart)."""
    # healthz_port: the launcher's default is "first free from 9091", which two starts at once both pick.
    names = ["proxy_port", *PORT_KEYS, "etcd_peer_port", "healthz_port"]
    chosen: dict[str, int] = {"proxy_port": proxy_port}
    for name in names[1:]:
        old = (previous or {}).get(name)
        if old and old not in chosen.values() and port_is_free(old):
            chosen[name] = old
    fresh = iter(p for p in free_ports(len(names) + 4) if p not in chosen.values())
    for name in names:
        chosen.setdefault(name, next(fresh))
    return chosen


def prepare(data_dir: Path, chosen: dict[str, int], venv: Path = VENV) -> dict[str, str]:
    """Lay out ``data_dir`` for a start on ``chosen`` ports; returns the environment variables the server needs."""
    _link_binaries(venv, data_dir)
    (data_dir / "configs").mkdir(exist_ok=True)
    (data_dir / "configs" / "milvus.yaml").unlink(missing_ok=True)  # checked after start-up: configured_proxy_port
    etcd_config = data_dir / "configs" / "embedEtcd.yaml"
    client, peer = f"http://127.0.0.1:{chosen['etcd_port']}", f"http://127.0.0.1:{chosen['etcd_peer_port']}"
    etcd_config.write_text(
        "# Written by llama_stack_milvus_devtools; read by milvus through ETCD_CONFIG_PATH.\n"
        f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n"
    )
    return {
        "ETCD_CONFIG_PATH": str(etcd_config),
        # Milvus reads any config key from the environment too (queryNode.gracefulStopTimeout is not in the
        # launcher's template, so --extra-config cannot set it). On SIGTERM a query node holding a loaded
        # collection waits this long (default 30 s, ~40 s in all) to hand its segments to another node; a
        # standalone server has none. Acknowledged rows are in the WAL (rocksmq) either way.
        "QUERYNODE_GRACEFULSTOPTIMEOUT": "1",
        # Only rootcoord revokes its etcd session on stop; the others expire with their lease (default 30 s,
        # renewed when etcd restarts). Until the old proxy's session is gone, time ticks stall and the first
        # Strong-consistency query after a restart waited ~24 s (with 10 s: ~3.5 s).
        "COMMON_SESSION_TTL": "10",
    }


def _link_binaries(venv: Path, data_dir: Path) -> None:
    """Point DATA/bin at the binaries unpacked once in the venv (saves ~4 s and 250 MB per data dir)."""
    cache_bin = venv / BIN_CACHE / "bin"
    bin_dir = data_dir / "bin"
    if bin_dir.is_symlink():
        if bin_dir.resolve() == cache_bin.resolve():
            return
        bin_dir.unlink()
    elif bin_dir.exists():
        return  # unpacked by a plain `milvus-server --data DIR`: the launcher checks it against the wheel
    bin_dir.symlink_to(cache_bin, target_is_directory=True)


def command(venv_python: Path, data_dir: Path, chosen: dict[str, int]) -> list[str]:
    cmd = [str(venv_python), "-c", SHIM, str(chosen["healthz_port"]), "--data", str(data_dir)]
    cmd += ["--proxy-port", str(chosen["proxy_port"])]
    for key in PORT_KEYS:
        cmd += ["--" + key.replace("_", "-"), str(chosen[key])]
    # Any value turns authorization on (the launcher's type=bool); omit the flag for no auth.
    cmd += ["--authorization-enabled", "true"]
    for component in COMPONENTS:
        cmd += ["--extra-config", f"{component}.ip=127.0.0.1"]
    return cmd


def configured_proxy_port(data_dir: Path) -> int | None:
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


def healthz_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200 and b"OK" in resp.read()
    except (urllib.error.URLError, OSError):
        return False


def log_excerpts(data_dir: Path, lines: int) -> list[tuple[str, list[str]]]:
    """milvus' structured log (stdout), then its stderr: etcd, cgo aborts and Go panics with goroutine dumps."""
    folder = data_dir / "logs"
    return [
        (f"last lines of {folder / 'milvus-stdout.log'}", logs.tail(folder / "milvus-stdout.log", 15)),
        (f"from {folder / 'milvus-stderr.log'}", logs.crash_excerpt(folder / "milvus-stderr.log", lines)),
    ]


def remove_server_id_files(pids: list[int]) -> None:
    """milvus writes $TMPDIR/milvus/server_id_<pid> at start and leaves it behind."""
    folder = Path(os.environ.get("TMPDIR") or "/tmp") / "milvus"
    for pid in pids:
        try:
            (folder / f"server_id_{pid}").unlink(missing_ok=True)
        except OSError:
            pass
