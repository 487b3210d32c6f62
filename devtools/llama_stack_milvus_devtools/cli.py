"""Command line: start, stop and inspect real Milvus servers on loopback (no Docker needed); set up the standalone
venv. The server keeps running, detached, after ``start`` returns::

    python -m llama_stack_milvus_devtools start --kind standalone|lite --data DIR [--port P]
    python -m llama_stack_milvus_devtools status --data DIR
    python -m llama_stack_milvus_devtools stop --data DIR
    python -m llama_stack_milvus_devtools ensure-standalone

``start`` prints ``MILVUS_URI=...`` and ``MILVUS_TOKEN=...`` (``eval``-able) and writes ``DIR/server.json``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from . import standalone
from .milvus import KINDS, MilvusServer, start_server, stop_server

STATE_FILE = "server.json"


def _read_state(data_dir: Path) -> MilvusServer | None:
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    return MilvusServer.from_json(json.loads(path.read_text()))


def _start(args: argparse.Namespace) -> int:
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


def _stop(args: argparse.Namespace) -> int:
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


def _status(args: argparse.Namespace) -> int:
    server = _read_state(Path(args.data).resolve())
    if server is None or not server.is_running():
        print("not running")
        return 3
    print(f"{server.kind} running: {server.uri} pid {server.pid} rss {server.rss_bytes() // 2**20} MiB")
    return 0


def _ensure_standalone(args: argparse.Namespace) -> int:
    print(standalone.ensure_venv(), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Start and stop real Milvus servers on loopback.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a server (detached) and wait until it answers")
    start.add_argument("--kind", choices=KINDS, required=True)
    start.add_argument("--data", required=True, help="data directory (created if missing)")
    start.add_argument("--port", type=int, default=None, help="gRPC port on 127.0.0.1 (default: a free one)")
    start.add_argument("--timeout", type=float, default=120)
    start.set_defaults(func=_start)
    stop = sub.add_parser("stop", help="stop the server started on --data")
    stop.add_argument("--data", required=True)
    stop.set_defaults(func=_stop)
    status = sub.add_parser("status", help="exit 0 if the server on --data runs, 3 if not")
    status.add_argument("--data", required=True)
    status.set_defaults(func=_status)
    ensure = sub.add_parser("ensure-standalone", help=f"create {standalone.VENV} with {standalone.SPEC} (idempotent)")
    ensure.set_defaults(func=_ensure_standalone)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"error: setting up {standalone.VENV} failed (exit code {exc.returncode}; see above)", file=sys.stderr)
        return 1
