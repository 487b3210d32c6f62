"""Seed 2, "Build RAG with Milvus, vLLM and Llama 3.1", through the `vllm` distribution.

A folder of HTML pages is turned into text, split into 512-character chunks with 10% overlap, embedded by the
server and inserted into a Milvus-backed store; the top 2 chunks for the question go into a prompt that puts the
best context last and lists its sources, and the vLLM distribution's model answers (temperature 0.2, top_p 0.95
as in the tutorial). Offline, pages of the Python FAQ stand in for the Milvus docs (pass your own with --docs).

    VLLM_URL=http://gpu-host:8000/v1 LLAMA_STACK_DISTRIBUTION=vllm ./scripts/run
    .venv/bin/python examples/seed2_vllm_rag.py [--url http://localhost:8321] [--docs DIR] [--question Q]
"""

import argparse
from pathlib import Path

from _common import CORPUS, add_server_arguments, chat_model, fresh_store, insert_chunks
from llama_stack_client import LlamaStackClient

from llama_stack_milvus.cli.documents import html_to_text

QUESTION = "Why is Python installed on my machine?"
CHUNK_SIZE = 512
CHUNK_OVERLAP = 51  # 10%
SEPARATORS = ["\n\n", "\n", " ", ""]


def split_text(text: str, size: int = CHUNK_SIZE, overlap: int = CHUNK_OVERLAP, separators=SEPARATORS) -> list[str]:
    """A recursive character splitter: pieces cut at the coarsest separator that fits, merged up to `size`
    characters, each chunk starting with the last `overlap` characters' worth of pieces of the one before."""
    separator = next((s for s in separators if s == "" or s in text), "")
    pieces = list(text) if separator == "" else text.split(separator)
    finer = separators[separators.index(separator) + 1 :]
    chunks: list[str] = []
    window: list[str] = []
    for piece in pieces:
        if len(piece) > size and finer:
            if window:
                chunks.append(separator.join(window))
                window = []
            chunks += split_text(piece, size, overlap, finer)
            continue
        if window and len(separator.join(window + [piece])) > size:
            chunks.append(separator.join(window))
            while window and len(separator.join(window)) > overlap:
                window.pop(0)
        window.append(piece)
    if window:
        chunks.append(separator.join(window))
    return [chunk.strip() for chunk in chunks if chunk.strip()]


def build_prompt(question: str, hits: list) -> str:
    """The tutorial's prompt: contexts with the best one last, then the question and the sources."""
    contexts = "\n\n".join(f"Context: {hit.content[0].text}" for hit in reversed(hits))
    sources = "\n".join(f"- {hit.attributes.get('source')}" for hit in hits)
    return (
        "You are a helpful assistant. Answer the question from the contexts below.\n\n"
        f"{contexts}\n\nQuestion: {question}\n\nGrounding sources:\n{sources}\n\nAnswer:"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--docs", type=Path, default=CORPUS / "python-faq-html")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--model")
    args = parser.parse_args()

    client = LlamaStackClient(base_url=args.url, api_key=args.api_key)
    texts, sources = [], []
    pages = sorted(args.docs.glob("*.html"))
    for page in pages:
        _title, text = html_to_text(page.read_text())
        for chunk in split_text(text):
            texts.append(chunk)
            sources.append(page.name)
    print(f"{len(pages)} pages became {len(texts)} chunks")

    store = fresh_store(client, "seed2-docs")
    insert_chunks(client, store.id, texts, sources)

    hits = client.vector_stores.search(vector_store_id=store.id, query=args.question, max_num_results=2).data
    for hit in hits:
        print(f"{hit.score:.3f}  {hit.attributes.get('source')}")
    completion = client.chat.completions.create(
        model=chat_model(client, args.model),
        messages=[{"role": "user", "content": build_prompt(args.question, hits)}],
        temperature=0.2,
        top_p=0.95,
        max_tokens=256,
    )
    print(completion.choices[0].message.content)


if __name__ == "__main__":
    main()
