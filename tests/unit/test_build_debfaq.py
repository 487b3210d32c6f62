"""The debfaq set is reproducible: two builds from the pinned Debian packages give the reference build's bytes.

The packages (37 MB) are fetched once with `apt-get download` into the bench cache and kept there.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")


def build(out: Path, hash_seed: str) -> subprocess.CompletedProcess:
    # Different hash seeds: set and dict orders that leak into the output would show as different bytes.
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench" / "build_debfaq.py"), "--out", str(out)],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_two_builds_give_the_reference_bytes(tmp_path):
    first, second = build(tmp_path / "a", "1"), build(tmp_path / "b", "2")
    for result in (first, second):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "byte-identical to the reference build" in result.stderr
        assert "2580 passages (median 755 characters), 120 queries, 175 judgments" in result.stderr
    for part in PARTS:
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes(), part
