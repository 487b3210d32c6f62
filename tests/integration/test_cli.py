"""The llama-stack-milvus console script against a real milvus-embedded server (with its local LLM)."""

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
CLI = Path(sys.executable).parent / "llama-stack-milvus"


def cli(server, *args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(CLI), "--url", server.base_url, *args], capture_output=True, text=True, timeout=600, env=os.environ
    )
    if check_rc is not None:
        assert result.returncode == check_rc, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """A folder of real pages of every supported text type, nested, plus files that must fail one by one."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(CORPUS / "docker-cli-md", root / "docker")
    (root / "python" / "faq").mkdir(parents=True)
    shutil.copy(CORPUS / "python-faq-html" / "installed.html", root / "python" / "faq")
    shutil.copy(CORPUS / "python-tutorial-rst" / "venv.rst", root / "python")
    (root / "python" / "notes.txt").write_text((CORPUS / "python-tutorial-rst" / "appetite.rst").read_text())
    (root / "python" / "logo.png").write_bytes(b"\x89PNG\r\n")  # not a supported type: not picked from a folder
    (root / "broken").mkdir()
    (root / "broken" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "broken" / "fake.pdf").write_bytes(b"this is not a PDF")
    return root


@pytest.fixture(scope="module")
def first_ingest(rag_server, docs) -> subprocess.CompletedProcess:
    return cli(rag_server, "ingest", "--store", "cli-docs", str(docs), str(docs / "missing.md"), check_rc=1)


def test_ingest_reports_bad_files_one_by_one_and_ingests_the_rest(first_ingest):
    out = first_ingest.stdout
    assert "missing.md: no such file or folder" in out
    assert "latin1.txt: not UTF-8 text" in out
    assert "fake.pdf: the server" in out
    assert "logo.png" not in out
    # 7 docker pages, installed.html, venv.rst, notes.txt
    assert "10 files ingested" in out and "3 errors" in out, out
    summary = out.strip().splitlines()[-1]
    chunks = int(summary.split(" chunks")[0].split()[-1])
    assert chunks >= 10, summary


def test_a_second_ingest_skips_unchanged_files(rag_server, docs, first_ingest):
    out = cli(rag_server, "ingest", "--store", "cli-docs", str(docs / "docker"), "--no-progress").stdout
    assert "0 files ingested, 0 chunks, 7 unchanged, 0 errors" in out, out


def test_a_changed_file_replaces_its_old_version(rag_server, docs, first_ingest):
    notes = docs / "python" / "notes.txt"
    notes.write_text("Kestrel deployments are configured with the zyxwvut option.\n")
    out = cli(rag_server, "ingest", "--store", "cli-docs", str(notes), "--no-progress").stdout
    assert "1 files ingested" in out, out
    hits = cli(rag_server, "search", "--store", "cli-docs", "zyxwvut kestrel", "--mode", "keyword", "-k", "3").stdout
    assert hits.startswith("[1]") and "notes.txt" in hits.splitlines()[0], hits
    old = cli(rag_server, "search", "--store", "cli-docs", "Monty Python's Flying Circus", "-k", "10").stdout
    assert "notes.txt" not in old, old  # the old text (the "Whetting Your Appetite" page) is gone


def test_search_prints_scores_titles_and_sources(rag_server, first_ingest):
    out = cli(rag_server, "search", "--store", "cli-docs", "How do I follow the log output of a container?").stdout
    first = out.splitlines()[0]
    assert first.startswith("[1] ") and "logs" in first and first.endswith("logs.md)"), out


def test_urls_are_fetched_by_the_client(rag_server, first_ingest):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(CORPUS / "python-faq-html"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/windows.html"
        # The test's page is on loopback, which the CLI fetches only when asked to.
        ingest = ("ingest", "--store", "cli-docs", "--no-progress", "--allow-private-urls")
        out = cli(rag_server, *ingest, url).stdout
        assert "1 files ingested" in out, out
        missing = cli(rag_server, *ingest, url + ".gone", check_rc=1).stdout
        assert "cannot fetch it" in missing and "404" in missing, missing
    finally:
        httpd.shutdown()
    hits = cli(rag_server, "search", "--store", "cli-docs", "How do I run a Python program under Windows?").stdout
    assert url in hits.splitlines()[0], hits


def test_ask_prints_an_answer_with_its_sources(rag_server, first_ingest):
    question = "What is the name of the module used to create virtual environments?"
    out = cli(rag_server, "ask", "--store", "cli-docs", question, "--mode", "rag").stdout
    answer, sources = out.split("\nSources (")
    assert "venv" in answer
    assert "venv.rst" in sources.splitlines()[1], out
    quote = sources.splitlines()[2].strip()  # the source's best sentence, quoted under it
    assert quote.startswith('"') and {"virtual", "environments", "venv", "module"} & set(quote.lower().split()), out
    agent = cli(rag_server, "ask", "--store", "cli-docs", "How do I follow the log output of a container?").stdout
    assert "logs.md" in agent.split("\nSources (")[1].splitlines()[1], agent


def test_asking_an_unknown_store_says_so(rag_server):
    result = cli(rag_server, "ask", "--store", "no-such-store", "anything", check_rc=2)
    assert "no vector store named 'no-such-store'" in result.stderr


def test_a_server_that_does_not_answer_in_time_is_a_timeout_not_a_missing_server():
    """A server that accepts the connection and never answers (a slow model, a busy machine) is reported as a
    timeout with the --timeout to raise, not as "no Llama Stack server"."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = subprocess.run(
            [str(CLI), "--url", url, "--timeout", "1", "search", "--store", "s", "anything"],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{url} did not answer within 1 s; pass a larger --timeout" in result.stderr
