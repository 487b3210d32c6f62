"""Debian's python3.11-doc as a real corpus: the reST sources of the Python documentation (497 files).

The package is fetched once with `apt-get download` into a cache dir (LLAMA_STACK_MILVUS_PYDOC_DIR, default
~/.cache/llama-stack-milvus/python3.11-doc) and unpacked with `dpkg -x`; later runs reuse it.
"""

import os
import subprocess
from pathlib import Path

PACKAGE = "python3.11-doc"
SOURCES = "usr/share/doc/python3.11/html/_sources"


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "llama-stack-milvus" / PACKAGE
    return Path(os.environ.get("LLAMA_STACK_MILVUS_PYDOC_DIR", default))


def rst_files() -> list[Path]:
    """Every .rst source of the package, sorted by path. Raises RuntimeError saying how to provide it."""
    root = cache_dir()
    sources = root / SOURCES
    if not sources.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        debs = sorted(root.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            fetched = subprocess.run(["apt-get", "download", PACKAGE], cwd=root, capture_output=True, text=True)
            debs = sorted(root.glob(f"{PACKAGE}_*.deb"))
            if not debs:
                raise RuntimeError(
                    f"`apt-get download {PACKAGE}` failed ({fetched.stderr.strip()[-300:]}); put a {PACKAGE} .deb "
                    f"in {root} or point LLAMA_STACK_MILVUS_PYDOC_DIR at a folder holding one"
                )
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(root)], check=True)
    return sorted(sources.rglob("*.rst.txt"))


def smallest(count: int) -> list[Path]:
    """The `count` smallest files (ties broken by path): real documents that ingest quickly."""
    return sorted(rst_files(), key=lambda path: (path.stat().st_size, str(path)))[:count]


def largest() -> Path:
    return max(rst_files(), key=lambda path: path.stat().st_size)


def upload_name(path: Path) -> str:
    """library/os.rst.txt -> library__os.rst: unique across folders, with the .rst extension of the source."""
    return str(path.relative_to(cache_dir() / SOURCES)).removesuffix(".txt").replace("/", "__")
