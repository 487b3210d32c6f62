"""file_search_quotes.py on Llama Stack's own Responses code: quotes are made, attached and kept by its models."""

import asyncio

import pydantic
from llama_stack.providers.inline.responses.builtin.responses import utils
from llama_stack.providers.inline.responses.builtin.responses.tool_executor import ToolExecutor
from llama_stack_api import OpenAIChatCompletionToolCallFunction, OpenAIChoice, ToolInvocationResult
from llama_stack_api.conversations.models import ConversationItem
from llama_stack_api.openai_responses import (
    OpenAIResponseObject,
    OpenAIResponseObjectStreamResponseCompleted,
    OpenAIResponseObjectStreamResponseOutputItemDone,
)

from llama_stack_milvus import file_search_quotes

file_search_quotes.install()

VENV = "Python ships several modules. The venv module creates virtual environments. Run it with python -m venv."
FLOAT = "Floats are binary fractions. So 0.1 + 0.2 is not exactly 0.3."


def file_search(query: str) -> tuple:
    """Upstream's ToolExecutor turning a search's metadata (as its file_search builds it) into its messages."""
    metadata = {
        "document_ids": ["file-a", "file-b", "file-a"],
        "chunks": [VENV, FLOAT, "Create a virtual environment per project."],
        "scores": [0.5, 0.4, 0.9],
        "attributes": [{"source": "venv.rst"}, {}, {}],
        "citation_files": {"file-a": "venv.rst", "file-b": "float.rst"},
    }
    result = ToolInvocationResult(content="the chunks, as the model reads them", metadata=metadata)
    function = OpenAIChatCompletionToolCallFunction(name="file_search", arguments="{}")
    message, _ = asyncio.run(
        ToolExecutor(None, None, None)._build_result_messages(
            function, "call-1", "fs-1", {"query": query}, None, None, result, False
        )
    )
    return message, metadata["citation_files"]


def test_each_result_quotes_its_best_sentence_for_the_tool_calls_query():
    message, _ = file_search("how to create virtual environments")
    quotes = [result.quote for result in message.results]
    sentence = "The venv module creates virtual environments."
    assert quotes[0] == {"text": sentence, "start": VENV.index(sentence), "end": VENV.index(sentence) + len(sentence)}
    assert quotes[1] is None  # no word of the query in it
    assert quotes[2]["text"] == "Create a virtual environment per project."
    assert message.results[0].attributes == {"source": "venv.rst"}  # the user's attributes stay as they were


def test_an_annotation_quotes_its_files_best_scored_result():
    _, citation_files = file_search("how to create virtual environments")
    choice = OpenAIChoice(
        message={"role": "assistant", "content": "Use venv <|file-a|>. Floats <|file-b|>."},
        finish_reason="stop",
        index=0,
    )
    answer = asyncio.run(utils.convert_chat_choice_to_response_message(choice, citation_files))
    part = answer.content[0]
    assert part.text == "Use venv. Floats."
    venv, floats = part.annotations
    assert (venv.file_id, venv.filename, venv.quote) == (
        "file-a",
        "venv.rst",
        "Create a virtual environment per project.",
    )
    assert floats.file_id == "file-b" and not hasattr(floats, "quote")


def test_quotes_survive_the_response_its_stream_events_storage_and_conversations():
    message, citation_files = file_search("how to create virtual environments")
    choice = OpenAIChoice(
        message={"role": "assistant", "content": "Use venv <|file-a|>."}, finish_reason="stop", index=0
    )
    answer = asyncio.run(utils.convert_chat_choice_to_response_message(choice, citation_files))
    response = OpenAIResponseObject(
        created_at=0, id="resp-1", model="m", status="completed", output=[message, answer], store=True
    )
    stored = OpenAIResponseObject.model_validate_json(response.model_dump_json())
    for dumped in (
        stored.model_dump(),
        OpenAIResponseObjectStreamResponseCompleted(response=stored, sequence_number=1).model_dump()["response"],
    ):
        assert dumped["output"][0]["results"][0]["quote"]["text"] == "The venv module creates virtual environments."
        assert (
            dumped["output"][1]["content"][0]["annotations"][0]["quote"] == "Create a virtual environment per project."
        )
    done = OpenAIResponseObjectStreamResponseOutputItemDone(
        response_id="r", item=answer, output_index=1, sequence_number=2
    )
    assert done.model_dump()["item"]["content"][0]["annotations"][0]["quote"]
    item = pydantic.TypeAdapter(ConversationItem).validate_python(answer.model_dump())
    assert item.content[0].annotations[0].quote == "Create a virtual environment per project."
