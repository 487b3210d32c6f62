"""llama-stack-milvus: ingest documents into a vector store of a Llama Stack server, search it, ask it.

    llama-stack-milvus ingest --store docs ./manual/ notes.md https://example.org/faq.html
    llama-stack-milvus search --store docs "How do I install it?"
    llama-stack-milvus ask --store docs "How do I install it?"
"""

import argparse
import logging
import os
import sys
import textwrap
import time

from llama_stack_client import APIConnectionError, APIError, APITimeoutError, AuthenticationError, LlamaStackClient

from .fetch import DEFAULT_MAX_MIB, UrlPolicy
from .ingest import find_store, ingest
from .query import Answer, Source, ask_agent, ask_rag, pick_model, search

DEFAULT_URL = "http://localhost:8321"
# An answer from the local model on a busy 2-core machine can take minutes; the client's own default is 60 s.
DEFAULT_TIMEOUT_S = 300.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llama-stack-milvus", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("LLAMA_STACK_URL", DEFAULT_URL), help="server (env LLAMA_STACK_URL)"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLAMA_STACK_CLIENT_API_KEY"),
        help="bearer token for a server with auth on (env LLAMA_STACK_CLIENT_API_KEY)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for each answer (default %(default)g)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ingest_cmd = commands.add_parser("ingest", help="add files, folders (recursively) and URLs to a store")
    ingest_cmd.add_argument("--store", required=True, help="vector store name (created if missing)")
    ingest_cmd.add_argument("paths", nargs="+", help="files, folders (txt, md, rst, html, pdf) and http(s) URLs")
    ingest_cmd.add_argument("--chunk-size", type=int, help="tokens per chunk (default: the server's)")
    ingest_cmd.add_argument("--chunk-overlap", type=int, help="tokens shared by neighbouring chunks")
    ingest_cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest_cmd.add_argument(
        "--max-download-mib", type=float, default=DEFAULT_MAX_MIB, help="largest URL download (default %(default)g)"
    )
    ingest_cmd.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="fetch URLs (and follow redirects) to loopback, private and link-local addresses",
    )

    search_cmd = commands.add_parser("search", help="print the top chunks with scores and sources")
    search_cmd.add_argument("--store", required=True)
    search_cmd.add_argument("query")
    search_cmd.add_argument("-k", "--top-k", type=int, default=5)
    search_cmd.add_argument("--mode", choices=["vector", "keyword", "hybrid"], default="vector")

    ask_cmd = commands.add_parser("ask", help="answer a question from a store and print its sources")
    ask_cmd.add_argument("--store", required=True)
    ask_cmd.add_argument("question")
    ask_cmd.add_argument("--model", help="chat model id (default: the server's first)")
    ask_cmd.add_argument("-k", "--top-k", type=int, default=3, help="passages to retrieve")
    ask_cmd.add_argument(
        "--mode",
        choices=["agent", "rag"],
        default="agent",
        help="agent: the Responses API with file_search; rag: search, then one chat completion with the passages",
    )
    return parser


def _print_sources(sources: list[Source]) -> None:
    for rank, source in enumerate(sources, 1):
        print(f"[{rank}] {source.score:.3f}  {source.title}  ({source.source})")
        if source.quote:
            print(textwrap.indent(f'"{textwrap.shorten(source.quote, 300)}"', "    "))


def _print_answer(answer: Answer, seconds: float) -> None:
    print(answer.text.strip())
    print(f"\nSources ({answer.model}, {seconds:.1f} s):")
    _print_sources(answer.sources)


def run(args: argparse.Namespace) -> int:
    client = LlamaStackClient(base_url=args.url, api_key=args.api_key, timeout=args.timeout)
    if args.command == "ingest":
        policy = UrlPolicy(max_mib=args.max_download_mib, allow_private=args.allow_private_urls)
        report = ingest(
            client,
            args.store,
            args.paths,
            args.chunk_size,
            args.chunk_overlap,
            not args.no_progress,
            url_policy=policy,
        )
        print(report.summary())
        return 1 if report.errors else 0
    store = find_store(client, args.store)
    if store is None:
        print(f"error: no vector store named {args.store!r} on {args.url}; ingest into it first", file=sys.stderr)
        return 2
    if args.command == "search":
        hits = search(client, store.id, args.query, args.top_k, args.mode)
        for rank, hit in enumerate(hits, 1):
            print(f"[{rank}] {hit.score:.3f}  {hit.title}  ({hit.source})")
            print(textwrap.indent(textwrap.shorten(hit.text, 400), "    "))
        return 0
    started = time.monotonic()
    model = pick_model(client, args.model)
    ask = ask_agent if args.mode == "agent" else ask_rag
    _print_answer(ask(client, store.id, args.question, model, args.top_k), time.monotonic() - started)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # llama_stack_client configures logging at INFO on import, which would print every HTTP request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return run(args)
    except APITimeoutError:
        print(f"error: {args.url} did not answer within {args.timeout:g} s; pass a larger --timeout", file=sys.stderr)
        return 2
    except APIConnectionError:
        print(f"error: no Llama Stack server at {args.url} (start one: ./scripts/run; or pass --url)", file=sys.stderr)
        return 2
    except AuthenticationError as e:
        how = "the token was refused" if args.api_key else "the server has auth on"
        print(f"error: {how} ({e.message}); pass --api-key or set LLAMA_STACK_CLIENT_API_KEY", file=sys.stderr)
        return 2
    except (APIError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
