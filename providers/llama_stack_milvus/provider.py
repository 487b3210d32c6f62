"""Entry point for `module: llama_stack_milvus`: our inline:: and remote::milvus (they replace the built-in ones),
inline::onnx-embeddings, inline::rerank (rerank models on the CPU) and inline::llama-cpp (a local chat model)."""

from llama_stack_api import Api, InlineProviderSpec, ProviderSpec

PIP_PACKAGES = ["llama-stack-milvus"]


def get_provider_spec() -> list[ProviderSpec]:
    return [
        InlineProviderSpec(
            api=Api.vector_io,
            provider_type="inline::milvus",
            pip_packages=PIP_PACKAGES,
            module="llama_stack_milvus.vector_io",
            config_class="llama_stack_milvus.vector_io.config.InlineMilvusConfig",
            api_dependencies=[Api.inference],
            optional_api_dependencies=[Api.files],
            description="Milvus Lite (a local file) as the vector store, by llama-stack-milvus.",
        ),
        # Declared as an inline spec on purpose: the 0.7.x resolver hands the run config's `vector_stores`
        # section (chunking defaults, retrieval multiplier) only to inline specs, and the remote provider needs it
        # as much as the inline one. It still talks to a remote Milvus.
        InlineProviderSpec(
            api=Api.vector_io,
            provider_type="remote::milvus",
            pip_packages=PIP_PACKAGES,
            module="llama_stack_milvus.vector_io",
            config_class="llama_stack_milvus.vector_io.config.RemoteMilvusConfig",
            api_dependencies=[Api.inference],
            optional_api_dependencies=[Api.files],
            description="A Milvus server or Zilliz Cloud as the vector store, by llama-stack-milvus.",
        ),
        InlineProviderSpec(
            api=Api.inference,
            provider_type="inline::onnx-embeddings",
            pip_packages=PIP_PACKAGES,
            module="llama_stack_milvus.embeddings",
            config_class="llama_stack_milvus.embeddings.config.OnnxEmbeddingsConfig",
            description="all-MiniLM-L6-v2 embeddings through ONNX Runtime (int8), by llama-stack-milvus.",
        ),
        InlineProviderSpec(
            api=Api.inference,
            provider_type="inline::rerank",
            pip_packages=PIP_PACKAGES,
            module="llama_stack_milvus.rerank",
            config_class="llama_stack_milvus.rerank.config.RerankConfig",
            description="Rerank models on the CPU: an offline late-interaction model built from all-MiniLM-L6-v2, "
            "and any local sentence-transformers CrossEncoder, by llama-stack-milvus.",
        ),
        # A llama.cpp server started by the provider: the offline chat model of the embedded distributions.
        InlineProviderSpec(
            api=Api.inference,
            provider_type="inline::llama-cpp",
            pip_packages=PIP_PACKAGES,
            module="llama_stack_milvus.inference",
            config_class="llama_stack_milvus.inference.config.LlamaCppConfig",
            description="A GGUF model (SmolLM2-135M-Instruct by default) served by llama.cpp, by llama-stack-milvus.",
        ),
    ]
