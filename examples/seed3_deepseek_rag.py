"""Seed 3, "Build RAG with Milvus and DeepSeek", through the `deepseek` distribution.

Markdown pages are split on their headings, embedded by the server and inserted into a Milvus-backed store that
is dropped first if it exists; the top 3 sections for the question (cosine, which equals the tutorial's inner
product on these normalised embeddings) go into the tutorial's `<context>`/`<question>` prompt, and DeepSeek
answers through the OpenAI SDK pointed at the stack. Offline, Docker's command-line reference (Markdown, like the
Milvus FAQ) stands in (pass your own with --docs).

    DEEPSEEK_API_KEY=... LLAMA_STACK_DISTRIBUTION=deepseek ./scripts/run
    .venv/bin/python examples/seed3_deepseek_rag.py [--url http://localhost:8321] [--docs DIR] [--question Q]
"""

import argparse
import re
from pathlib import Path

from _common import CORPUS, add_server_arguments, chat_model, fresh_store, insert_chunks
from llama_stack_client import LlamaStackClient
from openai import OpenAI

QUESTION = "How do I follow the log output of a container?"
HEADING = re.compile(r"^(?=#{1,6} )", re.M)
SYSTEM_PROMPT = (
    "Human: You are an AI assistant. You are able to find answers to the questions from the contextual passage "
    "snippets provided."
)


def split_on_headings(markdown: str) -> list[str]:
    """Sections that each start at a Markdown heading (text before the first heading is a section too)."""
    return [section.strip() for section in HEADING.split(markdown) if section.strip()]


def user_prompt(context: str, question: str) -> str:
    return (
        "Use the following pieces of information enclosed in <context> tags to provide an answer to the question "
        f"enclosed in <question> tags.\n<context>\n{context}\n</context>\n<question>\n{question}\n</question>"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--docs", type=Path, default=CORPUS / "docker-cli-md")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--model")
    args = parser.parse_args()

    client = LlamaStackClient(base_url=args.url, api_key=args.api_key)
    lines, sources = [], []
    for page in sorted(args.docs.glob("*.md")):
        for section in split_on_headings(page.read_text()):
            lines.append(section)
            sources.append(page.name)
    print(f"{len(lines)} text lines")

    store = fresh_store(client, "seed3-faq")
    insert_chunks(client, store.id, lines, sources)

    openai = OpenAI(base_url=f"{args.url}/v1", api_key=args.api_key or "unused")
    hits = openai.vector_stores.search(vector_store_id=store.id, query=args.question, max_num_results=3).data
    for hit in hits:
        print(f"{hit.score:.3f}  {hit.attributes.get('source')}")
    context = "\n".join(hit.content[0].text for hit in hits)
    completion = openai.chat.completions.create(
        model=chat_model(client, args.model),
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_prompt(context, args.question)},
        ],
        temperature=0.0,
        max_tokens=256,
    )
    print(completion.choices[0].message.content)


if __name__ == "__main__":
    main()
