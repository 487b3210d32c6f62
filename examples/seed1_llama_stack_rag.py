"""Seed 1, "Build RAG with Llama Stack and Milvus", in Llama Stack 0.7's API.

Four documentation pages go into a Milvus-backed vector store in 1024-token chunks; an agent (the Responses API)
with the instructions "You are a helpful assistant" and the file_search tool answers the tutorial's question.
The tutorial used torchtune's pages through URLs; offline, four pages of the Python tutorial stand in (pass
your own with --docs). Against the together distribution, pass --model together/meta-llama/Llama-3.3-70B-Instruct-Turbo.

    .venv/bin/python examples/seed1_llama_stack_rag.py [--url http://localhost:8321] [--docs DIR] [--model ID]
"""

import argparse
from pathlib import Path

from _common import CORPUS, add_server_arguments, chat_model, fresh_store
from llama_stack_client import LlamaStackClient

QUESTION = "What are the top 5 topics that were explained? Only list succinct bullet points."
CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 1024, "chunk_overlap_tokens": 128}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--docs", type=Path, default=CORPUS / "python-tutorial-rst")
    parser.add_argument("--model")
    parser.add_argument("--top-k", type=int, default=3, help="chunks file_search may return")
    args = parser.parse_args()

    client = LlamaStackClient(base_url=args.url, api_key=args.api_key)
    store = fresh_store(client, "seed1-docs")
    for path in sorted(args.docs.glob("*.rst")):
        with path.open("rb") as handle:
            uploaded = client.files.create(file=handle, purpose="assistants")
        client.vector_stores.files.create(
            vector_store_id=store.id, file_id=uploaded.id, chunking_strategy=CHUNKING, attributes={"source": path.name}
        )
        print(f"inserted {path.name}")

    # The Responses API directly rather than llama_stack_client.Agent, which wraps it: Agent.create_turn raises "No
    # response available" whenever a response ends `incomplete` (the model reached its token limit, about one answer
    # in six from the local model), where the answer so far is still worth showing.
    response = client.responses.create(
        model=chat_model(client, args.model),
        instructions="You are a helpful assistant",
        input=QUESTION,
        # 3 chunks of 1024 tokens: the local model's 8,192-token window cannot take the default 10.
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": args.top_k}],
        include=["file_search_call.results"],
        stream=False,
    )
    searches = [item for item in response.output if item.type == "file_search_call"]
    # Llama Stack 0.7.3 reports the file id as `filename`; the attributes carry the name.
    searched = sorted({(r.attributes or {}).get("source", r.filename) for item in searches for r in item.results or []})
    print(f"file_search results from: {', '.join(searched) or '(no search)'}")
    print(response.output_text)
    if response.status == "incomplete":
        print(f"[answer cut short: {response.incomplete_details.reason if response.incomplete_details else 'unknown'}]")


if __name__ == "__main__":
    main()
