"""Auth on: a real `llama stack run` server checks real RS256 tokens against a JWKS served from loopback.

Two users and an admin: user 2 can neither see nor touch user 1's stores and files (each attempt gets the 404 that
OpenAI gives for an id that does not exist, so existence does not leak, and changes nothing); a missing, forged,
expired or foreign token is a 401; /v1/health stays open; the admin sees everything. Auth off: the quota.
"""

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import openai
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm
from test_reliability_crash import kill_9

from llama_stack_milvus_devtools.stack import EMBEDDED_RUN_YAML as RUN_YAML
from llama_stack_milvus_devtools.stack import StackServer

ISSUER = "https://idp.test"
AUDIENCE = "llama-stack-milvus-test"
KID = "test-key"
ATTACH_TIMEOUT_S = 120
# No chat here: the local model's provider is pointed at a closed port instead of starting llama.cpp.
NO_LLM = {"LLAMA_CPP_URL": "http://127.0.0.1:9/v1"}


class SigningKey:
    """An RSA key whose public half a tiny HTTP server on 127.0.0.1 publishes as a JWKS."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        jwks = json.dumps({"keys": [dict(jwk, kid=KID, use="sig", alg="RS256")]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def jwks_uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def token(self, sub: str, roles: list[str] | None = None, **overrides) -> str:
        claims = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": int(time.time()), "exp": int(time.time()) + 600}
        if roles is not None:
            claims["roles"] = roles
        claims.update(overrides)
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": KID})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def signing_key() -> Iterator[SigningKey]:
    key = SigningKey()
    yield key
    key.stop()


@pytest.fixture(scope="module")
def auth_server(make_server, signing_key):
    server = make_server(
        "auth",
        env={
            **NO_LLM,
            "LLAMA_STACK_AUTH_JWKS_URI": signing_key.jwks_uri,
            "LLAMA_STACK_AUTH_ISSUER": ISSUER,
            "LLAMA_STACK_AUTH_AUDIENCE": AUDIENCE,
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_for(auth_server, signing_key) -> Callable[[str], openai.OpenAI]:
    tokens = {
        "alice": signing_key.token("alice", roles=["user"]),
        "bob": signing_key.token("bob", roles=["user"]),
        # A role, not a name, makes an admin: a user called "admin" without the role is an ordinary user.
        "admin": signing_key.token("carol", roles=["admin"]),
        "named-admin": signing_key.token("admin"),
    }

    def make(user: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{auth_server.base_url}/v1", api_key=tokens[user], max_retries=0, timeout=60)

    return make


def attach_and_wait(client: openai.OpenAI, store_id: str, file_id: str) -> str:
    result = client.vector_stores.files.create(vector_store_id=store_id, file_id=file_id)
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while result.status == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.5)
        result = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
    return result.status


@pytest.fixture(scope="module")
def alice_store(client_for) -> dict:
    """Alice's store with one attached file; Bob's own store and file, to aim at hers."""
    alice, bob = client_for("alice"), client_for("bob")
    marker = uuid.uuid4().hex
    alice_file = alice.files.create(
        file=("alice.md", f"Alice's secret launch code is {marker}.\n".encode()), purpose="assistants"
    )
    store = alice.vector_stores.create(name="alice-private", metadata={"owner": "alice"})
    assert attach_and_wait(alice, store.id, alice_file.id) == "completed"
    bob_file = bob.files.create(file=("bob.md", b"Bob's notes about gardening.\n"), purpose="assistants")
    bob_store = bob.vector_stores.create(name="bob-own")
    return {
        "store_id": store.id,
        "file_id": alice_file.id,
        "marker": marker,
        "bob_store_id": bob_store.id,
        "bob_file_id": bob_file.id,
    }


def test_health_is_open_without_a_token(auth_server):
    response = httpx.get(f"{auth_server.base_url}/v1/health", timeout=10)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "case",
    ["no header", "not a JWT", "expired", "wrong audience", "wrong issuer", "signed by another key", "not Bearer"],
)
def test_requests_without_a_valid_token_are_401(auth_server, signing_key, case):
    other_key = SigningKey()
    other_key.stop()
    headers = {
        "no header": {},
        "not a JWT": {"Authorization": "Bearer not-a-token"},
        "expired": {"Authorization": "Bearer " + signing_key.token("alice", exp=int(time.time()) - 60)},
        "wrong audience": {"Authorization": "Bearer " + signing_key.token("alice", aud="someone-else")},
        "wrong issuer": {"Authorization": "Bearer " + signing_key.token("alice", iss="https://evil.test")},
        "signed by another key": {"Authorization": "Bearer " + other_key.token("alice", roles=["admin"])},
        "not Bearer": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    }[case]
    for method, path in (("GET", "/v1/vector_stores"), ("GET", "/v1/files"), ("POST", "/v1/vector_stores")):
        response = httpx.request(method, f"{auth_server.base_url}{path}", headers=headers, json={}, timeout=10)
        assert response.status_code == 401, (case, method, path, response.text)


def test_other_user_does_not_see_the_store_in_lists(client_for, alice_store):
    bob = client_for("bob")
    assert alice_store["store_id"] not in [s.id for s in bob.vector_stores.list()]
    assert alice_store["file_id"] not in [f.id for f in bob.files.list()]
    assert [s.id for s in bob.vector_stores.list()] == [alice_store["bob_store_id"]]


# Each: what Bob tries on Alice's things. All must be the 404 of an unknown id.
BOB_ATTEMPTS: dict[str, Callable[[openai.OpenAI, dict], object]] = {
    "retrieve store": lambda bob, a: bob.vector_stores.retrieve(a["store_id"]),
    "update store": lambda bob, a: bob.vector_stores.update(a["store_id"], name="bob-was-here"),
    "delete store": lambda bob, a: bob.vector_stores.delete(a["store_id"]),
    "search store": lambda bob, a: bob.vector_stores.search(a["store_id"], query="launch code"),
    "list files of store": lambda bob, a: bob.vector_stores.files.list(a["store_id"]),
    "retrieve store file": lambda bob, a: bob.vector_stores.files.retrieve(a["file_id"], vector_store_id=a["store_id"]),
    "read store file content": lambda bob, a: bob.vector_stores.files.content(
        a["file_id"], vector_store_id=a["store_id"]
    ),
    "update store file": lambda bob, a: bob.vector_stores.files.update(
        a["file_id"], vector_store_id=a["store_id"], attributes={"bob": "was here"}
    ),
    "detach store file": lambda bob, a: bob.vector_stores.files.delete(a["file_id"], vector_store_id=a["store_id"]),
    "attach own file to the store": lambda bob, a: bob.vector_stores.files.create(
        vector_store_id=a["store_id"], file_id=a["bob_file_id"]
    ),
    "attach a file batch to the store": lambda bob, a: bob.vector_stores.file_batches.create(
        vector_store_id=a["store_id"], file_ids=[a["bob_file_id"]]
    ),
    "retrieve file": lambda bob, a: bob.files.retrieve(a["file_id"]),
    "read file content": lambda bob, a: bob.files.content(a["file_id"]).read(),
    "delete file": lambda bob, a: bob.files.delete(a["file_id"]),
    "attach her file to his own store": lambda bob, a: bob.vector_stores.files.create(
        vector_store_id=a["bob_store_id"], file_id=a["file_id"]
    ),
}


@pytest.mark.parametrize("attempt", list(BOB_ATTEMPTS))
def test_other_user_gets_404_and_changes_nothing(client_for, alice_store, attempt):
    alice, bob = client_for("alice"), client_for("bob")
    with pytest.raises(openai.NotFoundError):
        BOB_ATTEMPTS[attempt](bob, alice_store)

    store = alice.vector_stores.retrieve(alice_store["store_id"])
    assert (store.name, store.metadata["owner"], store.file_counts.completed) == ("alice-private", "alice", 1)
    assert [f.id for f in alice.vector_stores.files.list(alice_store["store_id"])] == [alice_store["file_id"]]
    attached = alice.vector_stores.files.retrieve(alice_store["file_id"], vector_store_id=alice_store["store_id"])
    assert (attached.status, attached.attributes) == ("completed", {})
    hits = alice.vector_stores.search(alice_store["store_id"], query="secret launch code").data
    assert any(alice_store["marker"] in part.text for hit in hits for part in hit.content)
    content = alice.files.content(alice_store["file_id"]).read().decode()
    assert alice_store["marker"] in content
    assert [f.id for f in bob.vector_stores.files.list(alice_store["bob_store_id"])] == []


def test_a_user_named_admin_is_not_an_admin(client_for, alice_store):
    named_admin = client_for("named-admin")
    assert alice_store["store_id"] not in [s.id for s in named_admin.vector_stores.list()]
    with pytest.raises(openai.NotFoundError):
        named_admin.vector_stores.retrieve(alice_store["store_id"])


def test_admin_sees_and_reads_everything(client_for, alice_store):
    admin = client_for("admin")
    store_ids = {s.id for s in admin.vector_stores.list()}
    assert {alice_store["store_id"], alice_store["bob_store_id"]} <= store_ids
    file_ids = {f.id for f in admin.files.list()}
    assert {alice_store["file_id"], alice_store["bob_file_id"]} <= file_ids
    assert alice_store["marker"] in admin.files.content(alice_store["file_id"]).read().decode()
    hits = admin.vector_stores.search(alice_store["store_id"], query="secret launch code").data
    assert any(alice_store["marker"] in part.text for hit in hits for part in hit.content)
    assert admin.vector_stores.delete(alice_store["bob_store_id"]).deleted
    assert alice_store["bob_store_id"] not in [s.id for s in client_for("bob").vector_stores.list()]


def run_cli(server, *args: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "llama-stack-milvus"
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_STACK_CLIENT_API_KEY"}
    return subprocess.run(
        [str(cli), "--url", server.base_url, *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_cli_sends_its_api_key(auth_server, signing_key, alice_store):
    search = ("search", "--store", "alice-private", "secret launch code")
    found = run_cli(auth_server, "--api-key", signing_key.token("alice", roles=["user"]), *search)
    assert found.returncode == 0, found.stderr
    assert alice_store["marker"] in found.stdout
    # Bob's key: Alice's store is not there for him.
    hidden = run_cli(auth_server, "--api-key", signing_key.token("bob", roles=["user"]), *search)
    assert hidden.returncode == 2 and "no vector store named 'alice-private'" in hidden.stderr, hidden.stderr
    refused = run_cli(auth_server, *search)
    assert refused.returncode == 2 and "pass --api-key" in refused.stderr, refused.stderr


def with_quota(folder: Path, anonymous: int, authenticated: int) -> Path:
    """milvus-embedded's run.yaml plus the server.quota block docs/security.md tells users to add."""
    config = yaml.safe_load(RUN_YAML.read_text())
    config["storage"]["backends"]["kv_quota"] = {"type": "kv_sqlite", "db_path": str(folder / "quota.db")}
    config["server"]["quota"] = {
        "kvstore": {"namespace": "quota", "backend": "kv_quota"},
        "anonymous_max_requests": anonymous,
        "authenticated_max_requests": authenticated,
        "period": "day",
    }
    path = RUN_YAML.parent / f"run-quota-test-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_quota_limits_requests_per_client(make_server, tmp_path):
    """Auth off, 3 requests a day per client address: the start-up health check was the first."""
    run_yaml = with_quota(tmp_path, anonymous=3, authenticated=1000)
    try:
        server = make_server("quota", run_yaml=run_yaml, env=NO_LLM)
        statuses = [httpx.get(f"{server.base_url}/v1/vector_stores", timeout=10).status_code for _ in range(3)]
        server.stop()
    finally:
        run_yaml.unlink()
    assert statuses == [200, 200, 429]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class TlsStackServer(StackServer):
    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def test_tls_from_env(server_env, tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    # StackServer polls /v1/health with httpx, which trusts SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    env = dict(
        server_env,
        **NO_LLM,
        LLAMA_STACK_MILVUS_DIR=str(tmp_path),
        LLAMA_STACK_TLS_CERTFILE=str(cert),
        LLAMA_STACK_TLS_KEYFILE=str(key),
    )
    server = TlsStackServer(RUN_YAML, tmp_path, env)
    server.start()
    try:
        assert httpx.get(f"{server.base_url}/v1/vector_stores", verify=str(cert), timeout=10).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/v1/health", timeout=10)
    finally:
        server.stop()


@pytest.mark.slow
def test_a_batch_cut_by_kill_9_resumes_as_its_owner_not_as_the_first_caller(make_server, signing_key):
    """Alice's 40-file batch is killed half-way; after the restart Bob's request is the first the server handles.
    The resume must run as Alice: run as Bob (as it did before: the resume started inside the first request), it
    cannot read Alice's files and fails every remaining one."""
    env = {
        **NO_LLM,
        "LLAMA_STACK_AUTH_JWKS_URI": signing_key.jwks_uri,
        "LLAMA_STACK_AUTH_ISSUER": ISSUER,
        "LLAMA_STACK_AUTH_AUDIENCE": AUDIENCE,
    }
    server = make_server("auth-resume", env=env)
    tokens = {user: signing_key.token(user, roles=["user"]) for user in ("alice", "bob")}

    def client(user: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=tokens[user], max_retries=0, timeout=120)

    alice = client("alice")
    texts = {
        alice.files.create(
            file=(f"note-{i}.txt", f"Note {i}: the courier code for depot {i} is K{i * 7919}.".encode()),
            purpose="assistants",
        ).id: i
        for i in range(40)
    }
    store_id = alice.vector_stores.create(name="alice-batch").id
    batch = alice.vector_stores.file_batches.create(store_id, file_ids=list(texts))
    deadline = time.monotonic() + 120
    while (
        counts := alice.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store_id).file_counts
    ).completed < 3:
        assert time.monotonic() < deadline, counts
        time.sleep(0.05)
    kill_9(server)
    assert counts.completed < len(texts), "the batch finished before the kill: nothing left to resume"

    server.start()  # on a new port: clients are made anew
    # The first request after the restart that reaches the vector_io provider is Bob's.
    assert client("bob").vector_stores.create(name="bob-first").name == "bob-first"
    alice = client("alice")
    deadline = time.monotonic() + 300
    while (resumed := alice.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store_id)).status == (
        "in_progress"
    ):
        assert time.monotonic() < deadline, resumed.file_counts
        time.sleep(0.5)
    files = alice.vector_stores.files.list(store_id, limit=100).data
    failed = {f.id: f.last_error.message for f in files if f.status != "completed"}
    assert not failed, failed
    assert len(files) == len(texts)
    hits = alice.vector_stores.search(store_id, query="courier code for depot 37").data
    assert hits and texts[hits[0].file_id] == 37
