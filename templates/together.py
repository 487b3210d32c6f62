"""The `together` distribution (seed tutorial 1): Together AI's Llama 3.3 70B, Milvus, offline embeddings.

TOGETHER_API_KEY authenticates; TOGETHER_URL replaces the endpoint (the tests point it at a local llama.cpp
server). Milvus Lite by default; MILVUS_URI (and MILVUS_TOKEN) switch to a Milvus server or Zilliz Cloud.
"""

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/gen_distributions.py loads templates by path

import _common as common  # noqa: E402

NAME = "together"
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def run_config() -> dict[str, Any]:
    state = common.state_dir(NAME)
    return common.run_config(
        NAME,
        state,
        inference=[common.together_provider()],
        vector_io=[common.milvus_lite_provider(state, server_from_env=True)],
        llm_models=[common.llm_model(MODEL, "together")],
    )
