"""Seed 1 (the Llama Stack tutorial) runs end to end on milvus-embedded with the local model.

Seeds 2 and 3 run on the vllm and deepseek distributions in test_hosted_distributions.py.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]


def test_seed1_agent_answers_with_file_search_over_the_four_pages(rag_server):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed1_llama_stack_rag.py"), "--url", rag_server.base_url],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("inserted ")] == [
        "inserted appetite.rst",
        "inserted floatingpoint.rst",
        "inserted interpreter.rst",
        "inserted venv.rst",
    ]
    searched = next(line for line in lines if line.startswith("file_search results from: "))
    pages = searched.removeprefix("file_search results from: ").split(", ")
    assert pages and set(pages) <= {"appetite.rst", "floatingpoint.rst", "interpreter.rst", "venv.rst"}, searched
    answer = "\n".join(lines[lines.index(searched) + 1 :])
    assert answer.strip(), result.stdout
