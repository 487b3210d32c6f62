"""Inference provider `inline::onnx-embeddings`: embeddings only, from the int8 ONNX export of all-MiniLM-L6-v2."""

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
from .export import EMBEDDING_DIMENSION, ensure_onnx_model

MODEL_ID = "all-MiniLM-L6-v2-int8"


class OnnxEmbeddingsImpl(InferenceProvider, ModelsProtocolPrivate):
    __provider_id__: str

    def __init__(self, config: OnnxEmbeddingsConfig) -> None:
        self.config = config
        self._batcher: EmbeddingBatcher | None = None
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
                identifier=MODEL_ID,
                provider_resource_id=MODEL_ID,
                provider_id=self.__provider_id__,
                metadata={"embedding_dimension": EMBEDDING_DIMENSION},
                model_type=ModelType.embedding,
            )
        ]

    async def register_model(self, model: Model) -> Model:
        if model.provider_resource_id != MODEL_ID:
            raise InvalidRequestError(
                f"inline::onnx-embeddings serves only '{MODEL_ID}', not '{model.provider_resource_id}'"
            )
        return model

    async def unregister_model(self, model_id: str) -> None:
        pass

    async def openai_embeddings(self, params: OpenAIEmbeddingsRequestWithExtraBody) -> OpenAIEmbeddingsResponse:
        validate_embeddings_input_is_text(params)
        # The router passes "onnx/<anything>" through as <anything> when no such model is registered.
        if params.model != MODEL_ID:
            raise InvalidRequestError(f"inline::onnx-embeddings serves only '{MODEL_ID}', not '{params.model}'")
        texts = [params.input] if isinstance(params.input, str) else list(params.input)
        if not texts:
            raise InvalidRequestError("input must hold at least one text")
        if params.dimensions is not None and params.dimensions != EMBEDDING_DIMENSION:
            raise InvalidRequestError(f"{MODEL_ID} gives {EMBEDDING_DIMENSION} dimensions, not {params.dimensions}")
        vectors = await (await self._get_batcher()).embed(texts)
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

    async def _get_batcher(self) -> EmbeddingBatcher:
        # Loaded on first use, like the sentence-transformers provider, so a stack that never embeds never pays.
        async with self._load_lock:
            if self._batcher is None:
                model_dir = self.config.model_dir or await asyncio.to_thread(ensure_onnx_model)
                encoder = await asyncio.to_thread(OnnxEncoder, model_dir, self.config.intra_op_threads)
                self._batcher = EmbeddingBatcher(encoder.encode)
        return self._batcher

    async def openai_completion(self, params: OpenAICompletionRequestWithExtraBody) -> OpenAICompletion:
        raise NotImplementedError("inline::onnx-embeddings serves embeddings only")

    async def openai_chat_completion(self, params: OpenAIChatCompletionRequestWithExtraBody) -> OpenAIChatCompletion:
        raise NotImplementedError("inline::onnx-embeddings serves embeddings only")
