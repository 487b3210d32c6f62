"""A Milvus server that hangs (process frozen with SIGSTOP: it accepts connections and never answers, like a
network partition) rather than one that is stopped (covered in test_remote_failures.py: refused at once).

The stack must answer every request within the documented bound, request_timeout_s (MILVUS_REQUEST_TIMEOUT_S, here
5 s) plus the stack's own overhead, with a 503 naming Milvus and its URI; once Milvus runs again (SIGCONT), the same
search succeeds without restarting the stack.
"""

import os
import signal
import time

import httpx
import pytest
import test_remote_http as remote
import testdocs
from llama_stack_client import LlamaStackClient
from test_remote_failures import ranked, search_once
from test_server_http import attach, error_message, upload

pytestmark = pytest.mark.server

REQUEST_TIMEOUT_S = 5
SLACK_S = 10  # embedding the query and the stack's own work, on a loaded 2-core machine
RECOVERY_POLL_S = 60


def test_frozen_milvus_is_a_503_within_request_timeout_then_recovers(milvus_factory, make_server, measurements):
    milvus = milvus_factory("lite", fresh=True)
    stack = remote.start_remote_stack(
        make_server, measurements, milvus, "frozen", MILVUS_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S)
    )
    client = LlamaStackClient(base_url=stack.base_url, timeout=120, max_retries=0)
    doc = testdocs.BY_KEY["gil"]
    store_id = client.vector_stores.create(name="frozen").id
    file_id = upload(client, doc)
    assert attach(client, store_id, file_id, doc.attributes).status == "completed"
    body = {"query": doc.question, "search_mode": "hybrid"}
    response, _ = search_once(stack.base_url, store_id, body)
    assert response.status_code == 200, response.text
    baseline = ranked(response)

    os.killpg(milvus.pid, signal.SIGSTOP)
    try:
        for _ in range(2):
            response, seconds = search_once(stack.base_url, store_id, body)
            remote.record(measurements, "frozen_milvus_search_answer_s", round(seconds, 2))
            assert response.status_code == 503, response.text
            message = error_message(response)
            assert "Milvus" in message and milvus.uri in message, message
            assert seconds < REQUEST_TIMEOUT_S + SLACK_S, seconds
        assert httpx.get(f"{stack.base_url}/v1/health", timeout=30).status_code == 200
    finally:
        os.killpg(milvus.pid, signal.SIGCONT)

    resumed = time.monotonic()
    while (response := search_once(stack.base_url, store_id, body)[0]).status_code != 200:
        assert response.status_code == 503, response.text
        assert time.monotonic() - resumed < RECOVERY_POLL_S, response.text
        time.sleep(0.5)
    remote.record(measurements, "frozen_milvus_recovery_s", round(time.monotonic() - resumed, 2))
    assert [fid for fid, _ in ranked(response)] == [fid for fid, _ in baseline]
    assert stack.starts == 1
    stack.stop()
