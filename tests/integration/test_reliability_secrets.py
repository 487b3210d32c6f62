"""Provider keys never leak: with TOGETHER_API_KEY and VLLM_API_TOKEN set, neither appears in the server's log
(its printed run config included) nor in any answer, including error answers of requests that go wrong on
purpose. (The Milvus token is covered in test_remote_failures.py.)"""

import httpx
import pytest

pytestmark = pytest.mark.server

SECRETS = {"TOGETHER_API_KEY": "tgp-secret-Kx81Qz7", "VLLM_API_TOKEN": "vllm-secret-Pq55Zr3"}


def test_provider_keys_appear_in_no_log_line_and_no_answer(make_server):
    # VLLM_URL points where nothing listens: a request that reaches vLLM fails (after ~30 s of the stack's retries),
    # and its error is checked too. Requests to Together would need the network.
    server = make_server("secrets", env={**SECRETS, "VLLM_URL": "http://127.0.0.1:9/v1"})
    answers = []
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        store_id = http.post("/v1/vector_stores", json={"name": "secrets"}).json()["id"]
        requests = [
            ("GET", "/v1/models", None),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "vllm/no-such-model", "messages": [{"role": "user", "content": "hi"}]},
            ),
            ("POST", f"/v1/vector_stores/{store_id}/search", {"query": "x", "filters": {"type": "bogus"}}),
            ("POST", "/v1/vector_stores/vs_missing/search", {"query": "x"}),
        ]
    for method, path, body in requests:
        # A fresh connection each: Llama Stack resets a keep-alive connection after some error answers.
        with httpx.Client(base_url=server.base_url, timeout=120) as fresh:
            answers.append(f"{method} {path}: {fresh.request(method, path, json=body).text}")
    server.stop()
    log = server.log_path.read_text(errors="replace")
    for name, secret in SECRETS.items():
        assert secret not in log, f"{name} is in the server log"
        leaked = [answer[:300] for answer in answers if secret in answer]
        assert not leaked, f"{name} is in answers: {leaked}"
