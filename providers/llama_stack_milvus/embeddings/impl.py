"""Inference provider `inline::onnx-embeddings`: embeddings only, from int8 ONNX exports of all-MiniLM-L6-v2.

It serves every export in export.MODEL_IDS: new stores get the default (the smoothed export), and a store made with
an older export keeps embedding its queries and files with that one. Each export is built and loaded on first use.
"""

import asyncio
import base64

from llama_stack_api import (
    InferenceProvider,
    Model,
    ModelsProtocolPrivate,
    ModelType,
    OpenAIChatCompletion,
    OpenAIChatCompletionRequestWithExtraBody,
    OpenAICompletion,
    OpenAICompletionRequestWithExtraBody,
    OpenAIEmbeddingData,
    OpenAIEmbeddingsRequestWithExtraBody,
    OpenAIEmbeddingsResponse,
    OpenAIEmbeddingUsage,
    validate_embeddings_input_is_text,
)

from ..errors import InvalidRequestError
from .batcher import EmbeddingBatcher
from .config import OnnxEmbeddingsConfig
from .encoder import OnnxEncoder
from .export import EMBEDDING_DIMENSION, MODEL_IDS, SMOOTH_MODEL_ID, ensure_onnx_model


class OnnxEmbeddingsImpl(InferenceProvider, ModelsProtocolPrivate):
    __provider_id__: str

    def __init__(self, config: OnnxEmbeddingsConfig) -> None:
        self.config = config
        self._batchers: dict[str, EmbeddingBatcher] = {}
        self._load_lock = asyncio.Lock()

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def should_refresh_models(self) -> bool:
        return False

    async def list_models(self) -> list[Model] | None:
        return [
            Model(
                identifier=model_id,
                provider_resource_id=model_id,
                provider_id=self.__provider_id__,
                metadata={"embedding_dimension": EMBEDDING_DIMENSION},
                model_type=ModelType.embedding,
            )
            for model_id in MODEL_IDS
        ]

    async def register_model(self, model: Model) -> Model:
        _check_model(model.provider_resource_id)
        return model

    async def unregister_model(self, model_id: str) -> None:
        pass

    async def openai_embeddings(self, params: OpenAIEmbeddingsRequestWithExtraBody) -> OpenAIEmbeddingsResponse:
        validate_embeddings_input_is_text(params)
        _check_model(params.model)
        texts = [params.input] if isinstance(params.input, str) else list(params.input)
        if not texts:
            raise InvalidRequestError("input must hold at least one text")
        if params.dimensions is not None and params.dimensions != EMBEDDING_DIMENSION:
            raise InvalidRequestError(f"{params.model} gives {EMBEDDING_DIMENSION} dimensions, not {params.dimensions}")
        vectors = await (await self._get_batcher(params.model)).embed(texts)
        data = [
            OpenAIEmbeddingData(
                embedding=base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                if params.encoding_format == "base64"
                else vector.tolist(),
                index=index,
            )
            for index, vector in enumerate(vectors)
        ]
        return OpenAIEmbeddingsResponse(
            data=data, model=params.model, usage=OpenAIEmbeddingUsage(prompt_tokens=-1, total_tokens=-1)
        )

    async def _get_batcher(self, model_id: str) -> EmbeddingBatcher:
        # Loaded on first use, like the sentence-transformers provider, so a stack that never embeds (or never
        # with this model) never pays.
        async with self._load_lock:
            if model_id not in self._batchers:
                if model_id == SMOOTH_MODEL_ID and self.config.model_dir:
                    model_dir = self.config.model_dir
                else:
                    model_dir = await asyncio.to_thread(ensure_onnx_model, model_id)
                encoder = await asyncio.to_thread(OnnxEncoder, model_dir, self.config.intra_op_threads)
                self._batchers[model_id] = EmbeddingBatcher(encoder.encode)
        return self._batchers[model_id]

    async def openai_completion(self, params: OpenAICompletionRequestWithExtraBody) -> OpenAICompletion:
        raise NotImplementedError("inline::onnx-embeddings serves embeddings only")

    async def openai_chat_completion(self, params: OpenAIChatCompletionRequestWithExtraBody) -> OpenAIChatCompletion:
        raise NotImplementedError("inline::onnx-embeddings serves embeddings only")


def _check_model(model_id: str) -> None:
    # The router passes "onnx/<anything>" through as <anything> when no such model is registered.
    if model_id not in MODEL_IDS:
        raise InvalidRequestError(
            f"inline::onnx-embeddings serves {' and '.join(repr(m) for m in MODEL_IDS)}, not {model_id!r}"
        )
