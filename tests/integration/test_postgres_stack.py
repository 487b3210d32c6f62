"""A real stack whose kv and sql stores are on a real PostgreSQL (the milvus-embedded distribution with its storage
backends switched to kv_postgres and sql_postgres): PostgreSQL killed under it answers 503s naming PostgreSQL, and
once it is back the same server serves again, stores and files included; a restart of the stack finds them."""

import io
import time

import httpx
import pytest
import yaml

from llama_stack_milvus_devtools.postgres import PostgresServer
from llama_stack_milvus_devtools.stack import EMBEDDED_RUN_YAML

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def postgres_run_yaml(tmp_path_factory):
    config = yaml.safe_load(EMBEDDED_RUN_YAML.read_text())
    connection = {
        "host": "${env.POSTGRES_HOST}",
        "port": "${env.POSTGRES_PORT}",
        "db": "${env.POSTGRES_DB}",
        "user": "${env.POSTGRES_USER}",
        "password": "${env.POSTGRES_PASSWORD}",
    }
    config["storage"]["backends"] = {
        "kv_default": {"type": "kv_postgres", **connection},
        "sql_default": {"type": "sql_postgres", **connection},
    }
    path = tmp_path_factory.mktemp("config") / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_attached(http: httpx.Client, store_id: str, file_id: str) -> dict:
    deadline = time.monotonic() + 120
    while True:
        record = http.get(f"/v1/vector_stores/{store_id}/files/{file_id}").json()
        if record["status"] != "in_progress" or time.monotonic() > deadline:
            return record
        time.sleep(0.3)


def test_postgres_outage_is_503_and_the_stack_recovers(make_server, postgres, postgres_run_yaml):
    server = make_server("pg-stack", run_yaml=postgres_run_yaml, env=postgres.env())
    http = httpx.Client(base_url=server.base_url, timeout=60)
    upload = {"file": ("gil.txt", io.BytesIO(b"The global interpreter lock lets one thread run Python bytecode."))}
    file_id = http.post("/v1/files", files=upload, data={"purpose": "assistants"}).json()["id"]
    store_id = http.post("/v1/vector_stores", json={"name": "before"}).json()["id"]
    http.post(f"/v1/vector_stores/{store_id}/files", json={"file_id": file_id})
    assert wait_attached(http, store_id, file_id)["status"] == "completed"

    postgres.kill()
    try:
        files = http.get("/v1/files")  # sql_postgres (the files provider's metadata)
        created = http.post("/v1/vector_stores", json={"name": "during"})  # kv_postgres (registry, our records)
    finally:
        postgres.start()

    where = f"PostgreSQL at {postgres.host}:{postgres.port}"
    assert files.status_code == 503, files.text
    assert f"{where} (sql_postgres store) is unavailable" in files.json()["error"]["message"]
    assert created.status_code == 503, created.text
    assert f"{where} (kvstore namespace" in created.json()["error"]["message"]
    assert postgres.password not in files.text + created.text

    # The same server process, PostgreSQL back: reads and writes on both kinds of store work again.
    assert [f["id"] for f in http.get("/v1/files").json()["data"]] == [file_id]
    after = http.post("/v1/vector_stores", json={"name": "after"})
    assert after.status_code == 200, after.text
    hits = http.post(f"/v1/vector_stores/{store_id}/search", json={"query": "interpreter lock"}).json()["data"]
    assert [hit["file_id"] for hit in hits][:1] == [file_id]

    # A restarted stack reads its stores and files back from PostgreSQL.
    server.restart()
    http = httpx.Client(base_url=server.base_url, timeout=60)
    names = {s["name"] for s in http.get("/v1/vector_stores").json()["data"]}
    assert {"before", "after"} <= names
    assert http.get(f"/v1/vector_stores/{store_id}/files").json()["data"][0]["id"] == file_id
