"""Quoted evidence through the Responses API's file_search (ogx#6242: Llama Stack 0.7.3's file_search results and
file_citation annotations carry no quote). Installed once when our vector_io provider loads (inside the server's
create_app, before it builds its routes):

- each file_search_call result gets `quote`: {"text", "start", "end"}, the sentence of the result's text that best
  supports the model's file_search query (quote.py), at those offsets; null when no sentence shares a word with it.
  The same object a vector-store search puts in content[0].metadata["quote"] with `quote: true`;
- each file_citation annotation of the answer gets `quote`: the text of its file's quote (from the best-scored
  result of that file that has one), as the Assistants API's file_citation.quote had.

Why hooks, and these: upstream's file_search (ToolExecutor) calls vector_io's search with a request it builds
itself, with no room for our `quote` option, and copies into each result only file_id, text, score and attributes.
Quoting in the provider would need the attributes, which the model also reads in its prompt (a second copy of each
sentence) and which hold the user's own keys. So the quote is added where upstream turns a file_search into its
result message (ToolExecutor._build_result_messages): the query and the result texts are both there, and it runs
for every store the tool searched, whatever provider holds it.
The annotations are made from the model's `<|file-id|>` markers by utils._extract_citations_from_text, which sees
only the response's map from file id to filename (citation_files). That map is the one state upstream carries from
a file_search to the answer, so each file's quote travels in it under a key no marker can name (markers are
[A-Za-z0-9_-]+), and the wrapped extractor attaches it.
Upstream's models drop unknown fields, and a model embeds the schemas of its parts as they were when it was built:
the result and annotation models are made to keep extra fields, then every loaded model that embeds them is rebuilt,
parts before wholes (responses, stream events, stored responses and conversation items alike). The openai SDK and
llama-stack-client keep extra fields, so `result.quote` and `annotation.quote` reach their users.
"""

import sys

import pydantic
from llama_stack.providers.inline.responses.builtin.responses import tool_executor, utils
from llama_stack_api.openai_responses import (
    OpenAIResponseAnnotationFileCitation,
    OpenAIResponseOutputMessageFileSearchToolCall,
    OpenAIResponseOutputMessageFileSearchToolCallResults,
)

from .vector_io.quote import best_quote

QUOTE_KEY_SUFFIX = "#quote"
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    keep_extra_fields([OpenAIResponseOutputMessageFileSearchToolCallResults, OpenAIResponseAnnotationFileCitation])
    build_result_messages = tool_executor.ToolExecutor._build_result_messages
    extract_citations = utils._extract_citations_from_text

    async def build_result_messages_with_quotes(
        self, function, tool_call_id, item_id, tool_kwargs, ctx, error_exc, result, *rest
    ):
        message, input_message = await build_result_messages(
            self, function, tool_call_id, item_id, tool_kwargs, ctx, error_exc, result, *rest
        )
        if isinstance(message, OpenAIResponseOutputMessageFileSearchToolCall) and message.results:
            quotes = quote_results(message.results, str(tool_kwargs.get("query", "")))
            # execute_tool_call reads citation_files from this same metadata after we return.
            citation_files = (getattr(result, "metadata", None) or {}).get("citation_files")
            if citation_files is not None:
                citation_files.update({file_id + QUOTE_KEY_SUFFIX: text for file_id, text in quotes.items()})
        return message, input_message

    def extract_citations_with_quotes(text: str, citation_files: dict[str, str]):
        annotations, clean_text = extract_citations(text, citation_files)
        for annotation in annotations:
            if quote := citation_files.get(annotation.file_id + QUOTE_KEY_SUFFIX):
                annotation.quote = quote
        return annotations, clean_text

    tool_executor.ToolExecutor._build_result_messages = build_result_messages_with_quotes
    utils._extract_citations_from_text = extract_citations_with_quotes


def quote_results(results: list[OpenAIResponseOutputMessageFileSearchToolCallResults], query: str) -> dict[str, str]:
    """Sets each result's quote; returns the quote text of each file, from its best-scored result that has one."""
    best: dict[str, tuple[float, str]] = {}
    for result in results:
        span = best_quote(result.text, query)
        result.quote = {"text": result.text[span[0] : span[1]], "start": span[0], "end": span[1]} if span else None
        if span and (result.file_id not in best or result.score > best[result.file_id][0]):
            best[result.file_id] = (result.score, result.quote["text"])
    return {file_id: text for file_id, (_, text) in best.items()}


def keep_extra_fields(parts: list[type[pydantic.BaseModel]]) -> None:
    """`parts` keep extra fields, in every loaded Llama Stack model that embeds them too."""
    for part in parts:
        part.model_config["extra"] = "allow"
        part.model_rebuild(force=True)
    loaded = {
        value
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in ("llama_stack", "llama_stack_api")
        for value in list(vars(module).values())
        if isinstance(value, type) and issubclass(value, pydantic.BaseModel) and value.__pydantic_complete__
    }
    schemas = {model: str(model.__pydantic_core_schema__) for model in loaded - set(parts)}
    wholes = {model for model, schema in schemas.items() if any(repr(part) in schema for part in parts)}
    rebuilt: set[type[pydantic.BaseModel]] = set(parts)

    def rebuild(model: type[pydantic.BaseModel]) -> None:
        if model in rebuilt:
            return
        rebuilt.add(model)
        for inner in wholes:
            if inner is not model and repr(inner) in schemas[model]:
                rebuild(inner)
        model.model_rebuild(force=True)

    for model in wholes:
        rebuild(model)
