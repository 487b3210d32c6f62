"""Real Milvus servers (standalone 2.3.5 and milvus-lite) on loopback, started by llama_stack_milvus_devtools.milvus
and by its command line, scripts/milvus_server.py.

The standalone server comes from .venv-milvus235 (created on first use: ~7 s, downloads the 58 MB wheel).
"""

import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from pymilvus import MilvusClient, MilvusException

from llama_stack_milvus_devtools import processes
from llama_stack_milvus_devtools.milvus import MilvusServer, connect, restart_server, start_server, stop_server
from llama_stack_milvus_devtools.ports import port_is_free

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "milvus_server.py"

DIM = 8

pytestmark = pytest.mark.server

needs_standalone_platform = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="PyPI milvus==2.3.5 ships Linux x86-64 binaries only",
)


def processes_using(data_dir: Path) -> list[str]:
    """Command lines of live processes that mention ``data_dir`` (the launcher, milvus, milvus-lite)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        stat = processes.proc_stat(int(entry))
        if stat is None or stat[0] in ("Z", "X"):
            continue
        cmdline = processes.cmdline(int(entry))
        if str(data_dir) in cmdline:
            found.append(f"{entry}: {cmdline[:200]}")
    return found


def assert_gone(server: MilvusServer) -> None:
    assert processes.group_pids(server.pid) == [], "processes of the group survived stop_server"
    assert processes_using(server.data_dir) == []
    assert port_is_free(server.port)
    # A standalone data dir takes ~140 MB (preallocated etcd and RocksDB logs); pytest keeps 3 runs of tmp dirs.
    shutil.rmtree(server.data_dir, ignore_errors=True)


def make_schema():
    from pymilvus import DataType

    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("meta", DataType.JSON)
    index = MilvusClient.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="COSINE")
    return schema, index


def round_trip(client: MilvusClient, name: str = "docs") -> None:
    """Create a FLOAT_VECTOR + JSON collection, insert, and search with a JSON filter."""
    rng = random.Random(7)
    schema, index = make_schema()
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    rows = [
        {"id": i, "vec": [rng.random() for _ in range(DIM)], "meta": {"k": i % 3, "doc": f"d{i}"}} for i in range(60)
    ]
    assert client.insert(name, rows)["insert_count"] == 60
    client.load_collection(name)
    hits = client.search(name, [rows[5]["vec"]], limit=3, filter='meta["k"] == 2', output_fields=["meta"])[0]
    assert [hit["id"] for hit in hits][0] == 5
    assert len(hits) == 3 and all(hit["entity"]["meta"]["k"] == 2 for hit in hits)


def count(client: MilvusClient, name: str = "docs") -> int:
    client.load_collection(name)
    return client.query(name, filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"]


def restart_and_check(server: MilvusServer) -> MilvusServer:
    """Milvus goes away and comes back: same port, same data (the 60 rows of round_trip)."""
    old_port, old_pid = server.port, server.pid
    server = restart_server(server)
    assert server.port == old_port and server.pid != old_pid
    assert processes.group_pids(old_pid) == []
    client = connect(server.uri, server.token)
    assert count(client) == 60
    client.close()
    return server


def test_lite_round_trip_bm25_hybrid_restart_and_stop(tmp_path: Path) -> None:
    from pymilvus import AnnSearchRequest, DataType, Function, FunctionType, RRFRanker

    server = start_server("lite", tmp_path / "lite")
    try:
        assert server.uri == f"http://127.0.0.1:{server.port}" and server.token is None
        assert server.started_in_seconds < 30
        client = connect(server.uri)
        assert client.get_server_version().startswith("milvus_lite-3.")
        round_trip(client)

        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("text", DataType.VARCHAR, max_length=500, enable_analyzer=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                     input_field_names=["text"], output_field_names=["sparse"]))  # fmt: skip
        index = MilvusClient.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="COSINE")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection("kw", schema=schema, index_params=index, consistency_level="Strong")
        texts = ["the quick brown fox", "milvus vector database", "hybrid search with bm25", "lazy dog sleeps"]
        client.insert("kw", [{"id": i, "text": t, "vec": [float(i + 1)] * DIM} for i, t in enumerate(texts)])
        hits = client.search(
            "kw", ["vector database"], anns_field="sparse", limit=2, search_params={"metric_type": "BM25"}
        )
        assert hits[0][0]["id"] == 1
        requests = [
            AnnSearchRequest(data=[[1.0] * DIM], anns_field="vec", param={"metric_type": "COSINE"}, limit=4),
            AnnSearchRequest(data=["bm25 search"], anns_field="sparse", param={"metric_type": "BM25"}, limit=4),
        ]
        hits = client.hybrid_search("kw", requests, RRFRanker(), limit=4)
        assert hits[0][0]["id"] == 2
        client.close()
        server = restart_and_check(server)
    finally:
        stop_server(server)
    assert_gone(server)
    stop_server(server)  # idempotent


@needs_standalone_platform
def test_standalone_auth_round_trip_restart_and_stop(tmp_path: Path) -> None:
    server = start_server("standalone", tmp_path / "standalone")
    try:
        assert server.token == "root:Milvus"
        assert server.uri == f"http://127.0.0.1:{server.port}"
        ports = set(server.ports.values())
        assert len(ports) == len(server.ports), f"two listeners share a port: {server.ports}"
        assert 19530 not in ports and 2379 not in ports and 2380 not in ports
        with pytest.raises(MilvusException) as refused:
            connect(server.uri, "root:wrong", timeout=5)
        cause = refused.value.__cause__
        assert isinstance(cause, grpc.RpcError) and cause.code() == grpc.StatusCode.UNAUTHENTICATED, cause

        client = connect(server.uri, server.token)
        assert client.get_server_version() == "v2.3.5-lite"
        round_trip(client)
        client.close()
        assert server.rss_bytes() > 50 * 2**20
        server = restart_and_check(server)
    finally:
        stop_server(server)
    assert_gone(server)


def test_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match="in use"):
            start_server("lite", tmp_path / "lite", port=port)


@pytest.mark.parametrize("kind", ["lite", pytest.param("standalone", marks=needs_standalone_platform)])
def test_cli_start_status_stop(tmp_path: Path, kind: str) -> None:
    data = tmp_path / f"cli-{kind}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=150, cwd=ROOT
        )

    started = cli("start", "--kind", kind, "--data", str(data))
    try:
        assert started.returncode == 0, started.stderr
        values = dict(line.split("=", 1) for line in started.stdout.splitlines())
        state = MilvusServer.from_json(json.loads((data / "server.json").read_text()))
        assert values["MILVUS_URI"] == state.uri
        assert values["MILVUS_TOKEN"] == (state.token or "")
        assert state.is_running()  # detached: outlives the CLI process
        client = connect(state.uri, state.token)
        assert client.list_collections() == []
        client.close()
        assert cli("status", "--data", str(data)).returncode == 0
        again = cli("start", "--kind", kind, "--data", str(data))
        assert again.returncode == 1 and "already runs" in again.stderr
    finally:
        stopped = cli("stop", "--data", str(data))
    assert stopped.returncode == 0, stopped.stderr
    assert not (data / "server.json").exists()
    assert_gone(state)
    assert cli("status", "--data", str(data)).returncode == 3
    assert cli("stop", "--data", str(data)).returncode == 0  # idempotent
