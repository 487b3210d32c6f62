"""Inference provider `inline::rerank`: Llama Stack's rerank API (POST /v1alpha/inference/rerank, and ranker
"neural" in vector-store searches) served on the CPU, offline.

Models: DEFAULT_MODEL_ID (scorers.LateInteractionScorer, built from the packaged all-MiniLM-L6-v2), and any
sentence-transformers CrossEncoder registered in the run config with model_type rerank and its local folder or
Hugging Face cache id as provider_model_id. A CrossEncoder is loaded when it is registered, so a wrong path stops
the stack at start-up with its name instead of failing the first search.
"""

import asyncio

from llama_stack_api import (
    InferenceProvider,
    Model,
    ModelsProtocolPrivate,
    ModelType,
    OpenAIChatCompletion,
    OpenAIChatCompletionContentPartTextParam,
    OpenAIChatCompletionRequestWithExtraBody,
    OpenAICompletion,
    OpenAICompletionRequestWithExtraBody,
    OpenAIEmbeddingsRequestWithExtraBody,
    OpenAIEmbeddingsResponse,
    RerankData,
    RerankResponse,
)
from llama_stack_api.inference import RerankRequest

from ..embeddings.export import PLAIN_MODEL_ID, ensure_onnx_model
from ..errors import InvalidRequestError
from .config import RerankConfig
from .scorers import CrossEncoderScorer, LateInteractionScorer, Scorer

DEFAULT_MODEL_ID = "minilm-late-interaction"


class RerankImpl(InferenceProvider, ModelsProtocolPrivate):
    __provider_id__: str

    def __init__(self, config: RerankConfig) -> None:
        self.config = config
        self._scorers: dict[str, Scorer] = {}
        self._load_lock = asyncio.Lock()
        # One scoring at a time: parallel forward passes only fight over the same cores.
        self._score_lock = asyncio.Lock()

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def should_refresh_models(self) -> bool:
        return False

    async def list_models(self) -> list[Model] | None:
        return [
            Model(
                identifier=DEFAULT_MODEL_ID,
                provider_resource_id=DEFAULT_MODEL_ID,
                provider_id=self.__provider_id__,
                model_type=ModelType.rerank,
            )
        ]

    async def register_model(self, model: Model) -> Model:
        name = model.provider_resource_id or model.identifier
        if model.model_type != ModelType.rerank:
            raise InvalidRequestError(
                f"inline::rerank serves rerank models only; {name!r} is registered as {model.model_type!s}"
            )
        if name != DEFAULT_MODEL_ID:
            async with self._load_lock:
                if name not in self._scorers:
                    self._scorers[name] = await asyncio.to_thread(_load_cross_encoder, name)
        return model

    async def unregister_model(self, model_id: str) -> None:
        self._scorers.pop(model_id, None)

    async def rerank(self, request: RerankRequest) -> RerankResponse:
        query = _text(request.query, "query")
        items = [_text(item, f"items[{i}]") for i, item in enumerate(request.items)]
        scorer = await self._scorer(request.model)
        async with self._score_lock:
            scores = await asyncio.to_thread(scorer.scores, query, items)
        ranked = sorted(range(len(items)), key=lambda i: -scores[i])[: request.max_num_results]
        return RerankResponse(data=[RerankData(index=i, relevance_score=scores[i]) for i in ranked])

    async def _scorer(self, model: str) -> Scorer:
        if model in self._scorers:
            return self._scorers[model]
        if model != DEFAULT_MODEL_ID:
            # The router passes "<provider_id>/<anything>" through as <anything> when no such model is registered.
            raise InvalidRequestError(
                f"inline::rerank has no model {model!r}: register it in the run config's registered_resources.models "
                f"with model_type rerank, or use {DEFAULT_MODEL_ID!r}"
            )
        # Loaded on first use: a stack that never reranks never pays for it.
        async with self._load_lock:
            if model not in self._scorers:
                # Its figures (docs/performance.md) were measured on the plain export.
                model_dir = self.config.model_dir or await asyncio.to_thread(ensure_onnx_model, PLAIN_MODEL_ID)
                self._scorers[model] = await asyncio.to_thread(
                    LateInteractionScorer, model_dir, self.config.intra_op_threads
                )
        return self._scorers[model]

    async def openai_completion(self, params: OpenAICompletionRequestWithExtraBody) -> OpenAICompletion:
        raise NotImplementedError("inline::rerank serves rerank models only")

    async def openai_chat_completion(self, params: OpenAIChatCompletionRequestWithExtraBody) -> OpenAIChatCompletion:
        raise NotImplementedError("inline::rerank serves rerank models only")

    async def openai_embeddings(self, params: OpenAIEmbeddingsRequestWithExtraBody) -> OpenAIEmbeddingsResponse:
        raise NotImplementedError("inline::rerank serves rerank models only")


def _text(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, OpenAIChatCompletionContentPartTextParam):
        return value.text
    raise InvalidRequestError(f"{where} must be text: inline::rerank does not rank images")


def _load_cross_encoder(name: str) -> CrossEncoderScorer:
    try:
        return CrossEncoderScorer(name)
    except Exception as e:
        raise InvalidRequestError(
            f"inline::rerank could not load the CrossEncoder {name!r} (a local folder, or a model id in the local "
            f"Hugging Face cache; nothing is downloaded): {e}"
        ) from e
