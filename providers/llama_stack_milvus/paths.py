"""Where llama-stack-milvus keeps files it prepares once per machine (offline tokenizer, ONNX export, bench data)."""

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LLAMA_STACK_MILVUS_CACHE", "~/.cache/llama-stack-milvus")).expanduser()
