"""A Milvus Lite file serves one process at a time: a second `llama stack run` on the same data directory must
stop at once, with a message that names the file and says another process holds it, while the first serves on."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llama_stack_milvus_devtools import REPO_ROOT
from llama_stack_milvus_devtools.ports import free_port

pytestmark = pytest.mark.server

SECOND_START_LIMIT_S = 90  # the stack's own start-up (model load) comes first; the refusal itself is immediate


def test_second_server_on_the_same_lite_file_fails_naming_the_file(make_server, reliability_figures):
    first = make_server("lite-lock")
    store_id = httpx.post(f"{first.base_url}/v1/vector_stores", json={"name": "held"}, timeout=60).json()["id"]
    db_path = first.data_dir / "milvus.db"
    llama = Path(sys.executable).parent / "llama"
    started = time.monotonic()
    second = subprocess.run(
        [str(llama), "stack", "run", str(first.run_yaml), "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=first.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SECOND_START_LIMIT_S * 2,
    )
    seconds = time.monotonic() - started
    reliability_figures["lite_lock_second_server_exit_s"] = round(seconds, 1)
    output = second.stdout + second.stderr
    assert second.returncode != 0, output[-3000:]
    assert seconds < SECOND_START_LIMIT_S, seconds
    lines = [line for line in output.splitlines() if f"Cannot open Milvus Lite file {db_path}" in line]
    assert lines, output[-3000:]
    assert any("another process holds it" in line for line in lines), lines

    # The first server never noticed: it still answers, with its store.
    response = httpx.get(f"{first.base_url}/v1/vector_stores/{store_id}", timeout=60)
    assert response.status_code == 200, response.text


def test_scripts_run_shows_a_failed_start_as_its_reason_alone(make_server, tmp_path):
    """`scripts/run` prints the reason of a failed start in one line and keeps the traceback in its log (a bare
    `llama stack run` prints the config and a rich traceback, some 330 lines)."""
    first = make_server("lite-lock-run")
    log = tmp_path / "server.log"
    env = dict(first.env, LLAMA_STACK_PORT=str(free_port()), LLAMA_STACK_MILVUS_LOG=str(log))
    second = subprocess.run(
        [str(REPO_ROOT / "scripts" / "run")],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SECOND_START_LIMIT_S * 2,
    )
    assert second.returncode != 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout == ""
    assert "Traceback" not in second.stderr
    reason, where = second.stderr.splitlines()[-2:]
    assert reason.startswith(
        f"error: the server did not start: Cannot open Milvus Lite file {first.data_dir / 'milvus.db'}: another "
        "process holds it"
    ), reason
    assert where == f"(full output in {log})"
    assert "Traceback" in log.read_text()
