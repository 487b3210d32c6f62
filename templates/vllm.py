"""The `vllm` distribution (seed tutorial 2): a vLLM server's OpenAI API, Milvus, offline embeddings.

VLLM_URL is the server's OpenAI base URL (default http://localhost:8000/v1), VLLM_MODEL the model it serves
(default meta-llama/Llama-3.1-8B-Instruct, as in the tutorial). Milvus Lite by default; MILVUS_URI (and
MILVUS_TOKEN) switch to a Milvus server or Zilliz Cloud.
"""

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/gen_distributions.py loads templates by path

import _common as common  # noqa: E402

NAME = "vllm"
MODEL = "${env.VLLM_MODEL:=meta-llama/Llama-3.1-8B-Instruct}"


def run_config() -> dict[str, Any]:
    state = common.state_dir(NAME)
    return common.run_config(
        NAME,
        state,
        inference=[common.vllm_provider()],
        vector_io=[common.milvus_lite_provider(state, server_from_env=True)],
        llm_models=[common.llm_model(MODEL, "vllm")],
    )
