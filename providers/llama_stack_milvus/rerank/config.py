from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class RerankConfig(BaseModel):
    """Serves the offline late-interaction reranker and any sentence-transformers CrossEncoder registered with it."""

    model_dir: Path | None = Field(
        default=None,
        description="Folder holding the int8 ONNX export of all-MiniLM-L6-v2 (model.onnx, tokenizer.json) for the "
        "default model; default: the one inline::onnx-embeddings uses, exported once into the cache.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Threads the passages run on: this many are encoded at once, each pass on one thread; 0: one per "
        "core.",
    )

    @classmethod
    def sample_run_config(cls, **kwargs: Any) -> dict[str, Any]:
        return {}
