"""`search` and `ask`: top chunks of a store, and answers generated from them."""

from dataclasses import dataclass
from typing import Any

from llama_stack_client import LlamaStackClient

INSTRUCTIONS = "You are a helpful assistant. Answer from the documents found by file search, briefly."
RAG_SYSTEM = "You answer questions using only the given context. If the context does not say, say you do not know."


@dataclass
class Source:
    score: float
    source: str
    title: str
    text: str
    quote: str | None = None  # the chunk's sentence that best supports the question or the file_search query


@dataclass
class Answer:
    text: str
    sources: list[Source]
    model: str


def pick_model(client: LlamaStackClient, requested: str | None) -> str:
    """The requested model, or the server's first chat model."""
    if requested:
        return requested
    for model in client.models.list():
        if model.model_type == "llm":
            return model.id
    raise LookupError("the server has no chat model: start it with one (see the README), or pass --model")


def _source(hit: Any) -> Source:
    attributes = hit.attributes or {}
    text = " ".join(part.text for part in hit.content) if hasattr(hit, "content") else (hit.text or "")
    # A vector-store search hit has it in content[0].metadata; a file_search result (Responses API) as its own
    # field, which llama-stack-client keeps as an extra field (file_search_quotes.py).
    if getattr(hit, "content", None):
        quote = (hit.content[0].to_dict().get("metadata") or {}).get("quote")
    else:
        quote = getattr(hit, "quote", None)
    return Source(
        score=float(hit.score or 0.0),
        # file_search results carry the file id as `filename` (Llama Stack 0.7.3); the attributes have the name.
        source=str(attributes.get("source") or attributes.get("filename") or hit.filename),
        title=str(attributes.get("title") or attributes.get("filename") or hit.filename),
        text=text,
        quote=(quote or {}).get("text"),
    )


def search(client: LlamaStackClient, store_id: str, query: str, top_k: int, mode: str = "vector") -> list[Source]:
    results = client.vector_stores.search(
        vector_store_id=store_id, query=query, max_num_results=top_k, search_mode=mode, extra_body={"quote": True}
    )
    return [_source(hit) for hit in results.data]


def ask_agent(client: LlamaStackClient, store_id: str, question: str, model: str, top_k: int) -> Answer:
    """The Responses API with file_search over the store. tool_choice names the tool: small models called with
    "auto" often answer without searching (status completed, no tool call), so the search is made certain."""
    response = client.responses.create(
        model=model,
        input=question,
        instructions=INSTRUCTIONS,
        tools=[{"type": "file_search", "vector_store_ids": [store_id], "max_num_results": top_k}],
        tool_choice={"type": "file_search"},
        include=["file_search_call.results"],
        temperature=0.0,
        stream=False,
    )
    sources = [
        _source(result) for item in response.output if item.type == "file_search_call" for result in item.results or []
    ]
    return Answer(response.output_text, sources, model)


def rag_prompt(question: str, sources: list[Source]) -> str:
    """The best passage last, next to the question (small models weigh the end of the prompt most)."""
    context = "\n\n".join(f"[{source.title}]\n{source.text}" for source in reversed(sources))
    return f"Context:\n{context}\n\nQuestion: {question}\nAnswer:"


def ask_rag(client: LlamaStackClient, store_id: str, question: str, model: str, top_k: int) -> Answer:
    """Retrieve, then one chat completion with the passages in the prompt."""
    sources = search(client, store_id, question, top_k)
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": RAG_SYSTEM},
            {"role": "user", "content": rag_prompt(question, sources)},
        ],
        temperature=0.0,
        max_tokens=256,
    )
    return Answer(completion.choices[0].message.content or "", sources, model)
