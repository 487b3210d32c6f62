"""inline::llama-cpp: the stack's OpenAI client for a llama.cpp server this provider starts and stops."""

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from llama_stack.log import get_logger
from llama_stack.providers.utils.inference.openai_mixin import OpenAIMixin
from llama_stack_api import (
    OpenAIChatCompletion,
    OpenAIChatCompletionChunk,
    OpenAIChatCompletionRequestWithExtraBody,
    OpenAIMessageParam,
)
from pydantic import PrivateAttr

from .config import LlamaCppConfig
from .server import LlamaCppServer, start_server

logger = get_logger(name=__name__, category="inference::llama-cpp")


def flatten_text_parts(message: OpenAIMessageParam) -> OpenAIMessageParam:
    """A message whose content is a list of text parts, with the parts joined into one string.

    The stack sends tool results (file_search chunks) as a list of text parts; llama-cpp-python's server
    accepts only a string there and answers 500 "Input should be a valid string". OpenAI reads a list of text
    parts as their concatenation, so joining them keeps the meaning. Lists with images stay as they are.
    """
    content = getattr(message, "content", None)
    if not isinstance(content, list) or not all(getattr(part, "type", None) == "text" for part in content):
        return message
    return message.model_copy(update={"content": "".join(part.text for part in content)})


def name_the_only_tool(
    params: OpenAIChatCompletionRequestWithExtraBody,
) -> OpenAIChatCompletionRequestWithExtraBody:
    """On the user's turn, a request offering one tool gets it named (unless the choice is "none") and bounded.

    SmolLM2-135M given tool_choice "auto" (or "required") answers from memory and never calls file_search
    (measured: 0 of 5), while a named tool is called 5 of 5 times. Only the turn that follows the user's
    message is constrained: once a tool result is in, the model answers freely.
    """
    tools = params.tools or []
    if len(tools) != 1 or not params.messages or params.messages[-1].role != "user":
        return params
    function = tools[0].get("function", {})
    name = function.get("name")
    choice = params.tool_choice
    named = isinstance(choice, dict) and choice.get("function", {}).get("name") == name
    if not name or (choice not in (None, "auto", "required") and not named):
        return params
    # A named tool is generated under a grammar made from its JSON schema; bounding its strings makes the
    # arguments end: SmolLM2 otherwise can repeat the context inside the query until max_tokens cuts the JSON.
    tool = {**tools[0], "function": {**function, "parameters": bound_strings(function.get("parameters") or {})}}
    return params.model_copy(update={"tools": [tool], "tool_choice": {"type": "function", "function": {"name": name}}})


def json_schema_as_json_object(
    params: OpenAIChatCompletionRequestWithExtraBody,
) -> OpenAIChatCompletionRequestWithExtraBody:
    """OpenAI's response_format {"type": "json_schema", "json_schema": {"schema": S}} as llama-cpp-python's server
    takes it: {"type": "json_object", "schema": S}, the same grammar-constrained output. It refuses the former (500
    "Input should be 'text' or 'json_object'"), so the Responses API's text.format json_schema always failed."""
    response_format = params.response_format
    if getattr(response_format, "type", None) != "json_schema":
        return params
    schema = response_format.json_schema.get("schema") or {"type": "object"}
    return params.model_copy(update={"response_format": {"type": "json_object", "schema": schema}})


def bound_strings(schema: Any) -> Any:
    """A copy of a JSON schema in which every string without a maxLength gets MAX_ARGUMENT_CHARS."""
    if isinstance(schema, list):
        return [bound_strings(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: bound_strings(value) for key, value in schema.items()}
    if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema:
        bounded["maxLength"] = MAX_ARGUMENT_CHARS
    return bounded


MAX_ARGUMENT_CHARS = 300
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f]")


def clean_tool_arguments(response: Any) -> None:
    """Turns control characters in a completion's (or chunk's) tool-call arguments into spaces, in place.

    SmolLM2 sometimes writes a raw newline inside a JSON string of its arguments, and the stack's json.loads
    rejects the call ("Invalid control character"), failing the whole response. A space is valid JSON both
    inside and outside strings, so the arguments parse and keep their meaning.
    """
    for choice in getattr(response, "choices", None) or []:
        message = getattr(choice, "delta", None) or getattr(choice, "message", None)
        for call in getattr(message, "tool_calls", None) or []:
            if call.function and call.function.arguments:
                call.function.arguments = CONTROL_CHARACTERS.sub(" ", call.function.arguments)


async def _cleaned(stream: AsyncIterator[OpenAIChatCompletionChunk]) -> AsyncIterator[OpenAIChatCompletionChunk]:
    async for chunk in stream:
        clean_tool_arguments(chunk)
        yield chunk


class LlamaCppInferenceAdapter(OpenAIMixin):
    config: LlamaCppConfig
    _server: LlamaCppServer | None = PrivateAttr(default=None)

    def get_api_key(self) -> str:
        return "no-key-needed"  # the OpenAI client insists on one; the local server checks none

    def get_base_url(self) -> str:
        if self.config.base_url:
            return self.config.base_url
        if self._server is None:
            raise RuntimeError("the llama.cpp server is not running (provider not initialized)")
        return self._server.base_url

    async def initialize(self) -> None:
        if self.config.base_url:
            return
        model = Path(self.config.model_path).expanduser() if self.config.model_path else None
        self._server = await asyncio.to_thread(
            start_server,
            model,
            self.config.model_alias,
            self.config.n_ctx,
            self.config.n_threads,
            self.config.start_timeout_s,
        )
        logger.info(
            "llama.cpp server ready",
            model=str(self._server.model_path),
            url=self._server.base_url,
            load_seconds=self._server.load_seconds,
        )

    async def shutdown(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
            self._server = None

    async def openai_chat_completion(
        self, params: OpenAIChatCompletionRequestWithExtraBody
    ) -> OpenAIChatCompletion | AsyncIterator[OpenAIChatCompletionChunk]:
        messages = [flatten_text_parts(message) for message in params.messages]
        params = params.model_copy(update={"messages": messages})
        if params.max_tokens is None and params.max_completion_tokens is None:
            params = params.model_copy(update={"max_tokens": self.config.max_tokens})
        if self.config.name_the_only_tool:
            params = name_the_only_tool(params)
        params = json_schema_as_json_object(params)
        response = await super().openai_chat_completion(params)
        if params.stream:
            return _cleaned(response)
        clean_tool_arguments(response)
        return response
