"""The drop-in promise: our built wheel, installed into an environment made for Llama Stack's own `starter`
distribution (the packages of `llama stack list-deps starter`), serves the starter's milvus entry once that entry
says `module: llama_stack_milvus`. These are the steps of docs/dropin.md; where they differ it says why.

Slow: the fresh environment is 6.9 GB (the starter's list plus torch's CUDA libraries from PyPI); the test took
about 3 minutes here on 2 cores (docs/dropin.md has the figures).
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from llama_stack_client import LlamaStackClient

from llama_stack_milvus_devtools import REPO_ROOT as ROOT
from llama_stack_milvus_devtools.ports import free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]

LLAMA_STACK_VERSION = "0.7.3"
INSTALL_TIMEOUT_S = 40 * 60
START_TIMEOUT_S = 180
ATTACH_TIMEOUT_S = 120
# llama-stack-milvus-prepare links the packaged all-MiniLM-L6-v2 into the HF cache under this name; the starter's
# own default (nomic-ai/nomic-embed-text-v1.5) would be downloaded on first use.
OFFLINE_EMBEDDING_MODEL = {
    "model_id": "all-MiniLM-L6-v2",
    "provider_id": "sentence-transformers",
    "provider_model_id": "all-MiniLM-L6-v2",
    "model_type": "embedding",
    "metadata": {"embedding_dimension": 384},
}
# pip would try about 125 semgrep releases (70 MB each; codeshield, a starter package, wants any) before this one, the
# newest that fits: minutes of downloads, and once over 15 minutes of backtracking here.
SEMGREP = "semgrep==1.79.0"
# Left out of the constraints taken from this suite's venv: weaviate-client (a starter package) needs grpcio<1.80.
UNCONSTRAINED = ("grpcio==",)
CAPITAL_TEXT = b"Quillport is the capital of Zarnovia, a small island country famous for its violet salt."
QUESTION = "What is the capital of Zarnovia?"
KETTLE_TEXT = b"A kettle boils water quickly when its lid is closed and its heating element is free of scale."


def run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs a command to success. PYTHONPATH never reaches it: it would let this checkout's source win over the
    installed wheel."""
    if env is None:
        env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
    )
    return result


def base_python() -> Path:
    """The interpreter this test's venv was made from (3.12+): the fresh venv gets the same one."""
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert python.exists(), f"no base interpreter at {python}"
    return python


def build_wheel(out_dir: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout (the build writes egg-info into its source tree)."""
    source = out_dir / "src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "providers", source / "providers", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    # --no-build-isolation: setuptools comes from this venv instead of the index, so the build works offline.
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out_dir), str(source)],
        300,
    )
    (wheel,) = out_dir.glob("llama_stack_milvus-*.whl")
    return wheel


def starter_pip_args(venv: Path) -> list[str]:
    """`llama stack list-deps starter` as pip arguments for one install with our wheel.

    Its special lines say `--no-deps` (sentence-transformers) and `--extra-index-url` (PyTorch's CPU index): in one
    pip call --no-deps would apply to every package, ours included, and the CPU index cannot be reached here, so
    both go; torch then comes from PyPI at the version our wheel pins (it runs on a CPU too).
    """
    listed = run([str(venv / "bin" / "llama"), "stack", "list-deps", "starter"], 120).stdout
    words = re.sub(r"--extra-index-url\s+\S+|--no-deps", " ", listed).split()
    assert "faiss-cpu" in words and any(word.startswith("pymilvus") for word in words), listed
    return words


def suite_constraints(path: Path) -> Path:
    """The versions of the venv running this suite as pip constraints: pip then resolves only what the starter adds,
    quickly and the same way every run (list-deps prints its packages in a different order each time)."""
    frozen = run([sys.executable, "-m", "pip", "freeze", "--exclude", "llama-stack-milvus"], 120).stdout
    pins = [line for line in frozen.splitlines() if "==" in line and not line.startswith(UNCONSTRAINED)]
    path.write_text("\n".join(pins) + "\n")
    return path


def pip_install(venv: Path, constraints: Path, args: list[str]) -> None:
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", "-c", str(constraints)]
    run([*command, *args], INSTALL_TIMEOUT_S)


@pytest.fixture(scope="module")
def starter_venv(tmp_path_factory) -> Path:
    """A fresh venv with llama-stack, the starter's packages and our wheel (not an editable install)."""
    work = tmp_path_factory.mktemp("dropin-install")
    wheel = build_wheel(work / "dist")
    venv = work / "starter-venv"
    run([str(base_python()), "-m", "venv", str(venv)], 120)
    constraints = suite_constraints(work / "constraints.txt")
    # mcp 2.x, which llama-stack 0.7.3 allows and pip picks, breaks the `llama` CLI (cannot import McpError).
    pip_install(venv, constraints, [f"llama-stack=={LLAMA_STACK_VERSION}", "mcp<2"])
    pip_install(venv, constraints, [*starter_pip_args(venv), SEMGREP, str(wheel)])
    where = run(
        [str(venv / "bin" / "python"), "-c", "import llama_stack_milvus; print(llama_stack_milvus.__file__)"], 60
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    return venv


def offline_env(venv: Path, home: Path) -> dict[str, str]:
    """A clean environment (no API keys, no PYTHONPATH, a HOME of its own so ~/.llama and the HF cache are
    private) plus what `llama-stack-milvus-prepare --print-env` exports."""
    home.mkdir(parents=True)
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8"}
    exports = run([str(venv / "bin" / "llama-stack-milvus-prepare"), "--print-env"], 300, env=env).stdout
    for line in exports.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    assert env.get("HF_HUB_OFFLINE") == "1" and "TIKTOKEN_CACHE_DIR" in env, exports
    return env


def starter_config_with_our_milvus(venv: Path) -> dict:
    """The starter's own config.yaml with its milvus entry served by llama_stack_milvus; the rest is the starter's
    except the offline embedding model and the loopback-only listen address."""
    site_packages = next((venv / "lib").glob("python3.*/site-packages"))
    starter = site_packages / "llama_stack" / "distributions" / "starter" / "config.yaml"
    config = yaml.safe_load(starter.read_text())
    (milvus,) = [entry for entry in config["providers"]["vector_io"] if entry["provider_type"] == "inline::milvus"]
    # The starter enables it only when MILVUS_URL is set (`${env.MILVUS_URL:+milvus}`); name it outright.
    milvus["provider_id"] = "milvus"
    milvus["module"] = "llama_stack_milvus"
    config["registered_resources"]["models"].append(OFFLINE_EMBEDDING_MODEL)
    config["vector_stores"]["default_embedding_model"] = {
        "provider_id": "sentence-transformers",
        "model_id": "all-MiniLM-L6-v2",
    }
    # Unset, uvicorn listens on every interface.
    config["server"]["host"] = "127.0.0.1"
    return config


@pytest.fixture(scope="module")
def starter_server(starter_venv, tmp_path_factory):
    work = tmp_path_factory.mktemp("dropin-run")
    env = offline_env(starter_venv, work / "home")
    env["MILVUS_DB_PATH"] = str(work / "milvus")  # the starter's own variable for its milvus entry's db_path
    config_path = work / "starter-milvus.yaml"
    config_path.write_text(yaml.safe_dump(starter_config_with_our_milvus(starter_venv), sort_keys=False))
    port = free_port()
    log_path = work / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(starter_venv / "bin" / "llama"), "stack", "run", str(config_path), "--port", str(port)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(base_url):
            assert process.poll() is None, (
                f"the server exited with {process.returncode}:\n{log_path.read_text()[-6000:]}"
            )
            assert time.monotonic() < deadline, (
                f"not healthy after {START_TIMEOUT_S} s:\n{log_path.read_text()[-6000:]}"
            )
            time.sleep(0.5)
        yield base_url, work
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def attach(client: LlamaStackClient, store_id: str, name: str, text: bytes, attributes: dict) -> str:
    file_id = client.files.create(file=(name, text), purpose="assistants").id
    attached = client.vector_stores.files.create(store_id, file_id=file_id, attributes=attributes)
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while attached.status == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.5)
        attached = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
    assert attached.status == "completed", attached.last_error
    return file_id


@pytest.fixture(scope="module")
def store(starter_server):
    """A store on the starter's `milvus` provider with two files attached, each with a topic attribute."""
    base_url, work = starter_server
    client = LlamaStackClient(base_url=base_url)
    created = client.vector_stores.create(name="dropin", extra_body={"provider_id": "milvus"})
    assert created.metadata["provider_id"] == "milvus"
    assert created.metadata["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    files = {
        "capital": attach(client, created.id, "zarnovia.txt", CAPITAL_TEXT, {"topic": "geography"}),
        "kettle": attach(client, created.id, "kettle.txt", KETTLE_TEXT, {"topic": "home"}),
    }
    assert any((work / "milvus").iterdir()), "no Milvus data under the starter's MILVUS_DB_PATH"
    return client, base_url, created.id, files


def search(client: LlamaStackClient, store_id: str, mode: str, **kwargs) -> list:
    return client.vector_stores.search(store_id, query=QUESTION, search_mode=mode, **kwargs).data


def test_search_returns_the_chunk_that_answers(store):
    client, _, store_id, files = store
    hits = search(client, store_id, "vector")
    assert hits and hits[0].file_id == files["capital"], hits
    assert "Quillport" in hits[0].content[0].text


def test_hybrid_search_honours_the_filter(store):
    client, _, store_id, files = store
    hits = search(client, store_id, "hybrid", filters={"type": "eq", "key": "topic", "value": "home"})
    assert [hit.file_id for hit in hits] == [files["kettle"]]


# What only ours does. The built-in inline::milvus, in this same environment (pymilvus 2.6.17, milvus-lite 3.2.2),
# answered keyword search with no results and an invalid filter with 200 and no results (measured).
def test_keyword_search_is_served(store):
    client, _, store_id, files = store
    hits = search(client, store_id, "keyword")
    assert hits, "keyword search found nothing: is the built-in inline::milvus answering instead of ours?"
    assert hits[0].file_id == files["capital"]


def test_invalid_filter_is_our_400(store):
    _, base_url, store_id, _ = store
    response = httpx.post(
        f"{base_url}/v1/vector_stores/{store_id}/search",
        json={"query": QUESTION, "filters": {"type": "regex", "key": "topic", "value": "geo.*"}},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith("Invalid filters:"), response.text
