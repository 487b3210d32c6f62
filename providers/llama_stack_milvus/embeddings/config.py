from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class OnnxEmbeddingsConfig(BaseModel):
    """all-MiniLM-L6-v2 through ONNX Runtime with int8 MatMuls, exported locally from the packaged weights."""

    model_dir: Path | None = Field(
        default=None,
        description="Folder holding model.onnx and tokenizer.json for the default model, "
        "all-MiniLM-L6-v2-int8-smooth; default: exported once into ~/.cache/llama-stack-milvus/onnx "
        "(LLAMA_STACK_MILVUS_CACHE moves it). all-MiniLM-L6-v2-int8 is always exported there.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Threads a batch of texts runs on: this many texts are embedded at once, each pass on one thread; "
        "0: one per core.",
    )

    @classmethod
    def sample_run_config(cls, **kwargs: Any) -> dict[str, Any]:
        return {}
