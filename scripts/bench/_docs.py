"""Real documentation as chunks, for the search-latency bench: six Debian documentation packages (Python 3.11,
PostgreSQL 15, Django, SQLAlchemy, Flask, Docker; reST, HTML and Markdown), cut with the stack's own chunker.

The packages are fetched once with `apt-get download` into the cache folder (or taken from --debs), unpacked with
`dpkg -x`; the chunk list is cached as JSONL, keyed by the package files and the recipe.
"""

import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from llama_stack_milvus.cli.documents import html_to_text

PACKAGES = {
    # package -> (folder under usr/share/doc, file pattern): reST sources where the package has them, else HTML/MD.
    "python3.11-doc": ("python3.11", "html/_sources/**/*.txt"),
    "postgresql-doc-15": ("postgresql-doc-15", "**/*.html"),
    "python-django-doc": ("python-django-doc", "**/*.html"),
    "python-sqlalchemy-doc": ("python-sqlalchemy-doc", "**/*.rst"),
    "python-flask-doc": ("python-flask-doc", "**/_sources/**/*.txt"),
    "docker-doc": ("docker-doc", "**/*.md"),
}
# 80-token windows (16 overlapping) give about 103,000 chunks from these six packages: enough for the 100k run.
# (About 108,000 when HTML pages kept their navigation text: html_to_text drops it, 4,592 chunks fewer from the
# PostgreSQL and Django pages.)
CHUNK_TOKENS, OVERLAP_TOKENS = 80, 16
HTML_TEXT = "cli.documents.html_to_text"  # part of the cache key: chunks cut before it (script/style only) differ


def document_text(path: Path) -> str:
    raw = path.read_text(errors="replace")
    if path.suffix == ".html":
        return html_to_text(raw)[1]  # the visible text, as `llama-stack-milvus ingest` uploads a page
    return re.sub(r"[ \t]+", " ", raw)


def fetch_debs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    debs = []
    for package in PACKAGES:
        found = sorted(folder.glob(f"{package}_*.deb"))
        if not found:
            print(f"apt-get download {package}", file=sys.stderr)
            subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True)
            found = sorted(folder.glob(f"{package}_*.deb"))
        debs.append(found[-1])
    return debs


def chunks_file(cache: Path, debs_folder: Path | None = None) -> Path:
    """The JSONL of every chunk {id, text, package, source}, shuffled with a fixed seed so any prefix mixes all
    packages; built on first use."""
    debs = fetch_debs(debs_folder or cache / "debs")
    recipe = "".join(f"{d.name}:{d.stat().st_size}" for d in debs) + f"{PACKAGES}{CHUNK_TOKENS}/{OVERLAP_TOKENS}"
    recipe += HTML_TEXT
    path = cache / f"search-chunks-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.jsonl"
    if not path.exists():
        with tempfile.TemporaryDirectory(dir=cache) as unpacked:
            chunks = _chunk_packages(debs, Path(unpacked))
        random.Random(0).shuffle(chunks)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(chunk) + "\n" for chunk in chunks))
        tmp.replace(path)
    return path


def load_chunks(path: Path, limit: int) -> list[dict]:
    with path.open() as f:
        chunks = [json.loads(line) for line, _ in zip(f, range(limit), strict=False)]
    if len(chunks) < limit:
        raise SystemExit(f"only {len(chunks)} chunks in {path}, {limit} asked for")
    return chunks


def _chunk_packages(debs: list[Path], unpacked: Path) -> list[dict]:
    from llama_stack.providers.utils.memory.vector_store import make_overlapped_chunks

    from llama_stack_milvus.offline import ensure_tiktoken_cache

    ensure_tiktoken_cache()  # the chunker's tokenizer, offline
    chunks = []
    for deb, (package, (folder, pattern)) in zip(debs, PACKAGES.items(), strict=True):
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
        root = unpacked / "usr" / "share" / "doc" / folder
        for path in sorted(root.glob(pattern)):
            source = str(path.relative_to(root))
            for chunk in make_overlapped_chunks(source, document_text(path), CHUNK_TOKENS, OVERLAP_TOKENS, {}):
                text = str(chunk.content).strip()
                if text:
                    chunks.append(
                        {"id": f"{package}:{chunk.chunk_id}", "text": text, "package": package, "source": source}
                    )
        print(f"{package}: {len(chunks)} chunks so far", file=sys.stderr)
    return chunks
